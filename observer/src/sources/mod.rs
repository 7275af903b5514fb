//! Signal sources: one module per signal, each turning kernel records into events.

pub mod abort_on_data;
pub mod drops;
pub mod goruntime;
pub mod memcg;
pub mod net;
pub mod retransmit;
pub mod tcp;
