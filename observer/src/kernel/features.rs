//! Feature probing (filled in below).
