//! Signal sources: one module per signal, each turning kernel records into events.

pub mod goruntime;
pub mod tcp;
