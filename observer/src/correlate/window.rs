//! The reorder window: records wait here and leave oldest first, so records
//! from every CPU and source are processed in time order. Ties keep the order
//! they were pushed in.

use std::collections::BTreeMap;

use crate::workload::Attributed;

#[derive(Debug, Default)]
pub(crate) struct Window {
    pending: BTreeMap<(u64, u64), Attributed>,
    seq: u64,
}

impl Window {
    pub(crate) fn push(&mut self, a: Attributed) {
        self.seq += 1;
        self.pending.insert((a.record.time_unix_nano, self.seq), a);
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn pop_oldest(&mut self) -> Option<Attributed> {
        self.pending.pop_first().map(|(_, a)| a)
    }

    /// The oldest record when it is at or before `horizon`.
    pub(crate) fn pop_due(&mut self, horizon: u64) -> Option<Attributed> {
        let (&(t, _), _) = self.pending.first_key_value()?;
        if t > horizon {
            return None;
        }
        self.pop_oldest()
    }
}
