//! Signal sources: one module per signal, each turning kernel records into events.

pub mod drops;
pub mod goruntime;
pub mod net;
pub mod retransmit;
pub mod tcp;
