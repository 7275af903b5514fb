//! Children of one episode under the per-kind span budget: the first
//! `span_budget` records of a kind become child spans, the rest of that kind
//! fold into one aggregate with exact count, sum, min and max.

use super::{
    episode::{Child, Folded},
    ids::Ids,
    rules::ChildKind,
};
use crate::event::Record;

#[derive(Debug, Default)]
pub(crate) struct Spans {
    children: Vec<Child>,
    per_kind: [usize; ChildKind::ALL],
    folded: [Option<Folded>; ChildKind::ALL],
}

impl Spans {
    pub(crate) fn add(&mut self, kind: ChildKind, start: u64, end: u64, record: Record, budget: usize, ids: &mut Ids) {
        let i = kind.index();
        if self.per_kind[i] < budget {
            self.per_kind[i] += 1;
            self.children.push(Child { span_id: ids.span_id(), start_unix_nano: start, end_unix_nano: end, record });
            return;
        }
        let v = kind.value(start, end);
        match &mut self.folded[i] {
            Some(f) => {
                f.count += 1;
                f.sum = f.sum.saturating_add(v);
                f.min = f.min.min(v);
                f.max = f.max.max(v);
                f.start_unix_nano = f.start_unix_nano.min(start);
                f.end_unix_nano = f.end_unix_nano.max(end);
            }
            slot => {
                *slot = Some(Folded {
                    span_id: ids.span_id(),
                    kind: kind.name(),
                    count: 1,
                    sum: v,
                    min: v,
                    max: v,
                    unit: kind.unit(),
                    start_unix_nano: start,
                    end_unix_nano: end,
                })
            }
        }
    }

    /// Children in time order (by start, then end), and the aggregates.
    pub(crate) fn finish(self) -> (Vec<Child>, Vec<Folded>) {
        let mut children = self.children;
        children.sort_by_key(|c| (c.start_unix_nano, c.end_unix_nano));
        (children, self.folded.into_iter().flatten().collect())
    }
}
