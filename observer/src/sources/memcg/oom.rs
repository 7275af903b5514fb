//! OOM victims from `oom:mark_victim`, on cgroup v1 and v2 hosts alike.
//!
//! The tracepoint fires in the task whose allocation ran the OOM killer, and
//! its record names the victim by `pid`. The victim's cgroup is the current
//! task's only when the two are the same task; otherwise it is looked up in
//! /proc/PID/cgroup right away (the program wakes the agent at once, and a
//! killed task keeps its /proc entry until it is reaped). A victim that is
//! not the current task (the other members of a `memory.oom.group` kill)
//! and whose parent reaps it before the agent reads /proc is reported with
//! its pid and comm but no cgroup (`cgroup_source` `none`): 6.1's record
//! has only the pid, so the kernel side cannot name its cgroup there.

use std::path::Path;

use aya::{Ebpf, programs::TracePoint};
use observer_common::memcg::OomVictimEvent;

use crate::{
    cgroup::CgroupPaths,
    event::{Attribution, CgroupSource, MemcgOomKill},
    kernel::{
        features::chain,
        tracefs::{Field, Format, TracefsError},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("oom:mark_victim has no `pid` field")]
    NoPid,
    #[error("attaching oom:mark_victim: {0}")]
    Attach(String),
    #[error("program oom_mark_victim is missing from the embedded eBPF object")]
    MissingProgram,
}

/// Where the fields of the running kernel's record are.
pub struct OomSource {
    pid: Field,
    comm: Option<Field>,
    total_vm: Option<Field>,
    anon_rss: Option<Field>,
    cgroup2: Option<std::path::PathBuf>,
}

impl OomSource {
    pub fn prepare(tracefs: &Path) -> Result<Self, OomError> {
        let format = Format::read(tracefs, "oom", "mark_victim")?;
        let pid = format.field("pid").cloned().ok_or(OomError::NoPid)?;
        let cgroup2 =
            std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| crate::cgroup::cgroup2_mount(&m));
        Ok(Self {
            pid,
            comm: format.field("comm").cloned(),
            total_vm: format.field("total_vm").cloned(),
            anon_rss: format.field("anon_rss").cloned(),
            cgroup2,
        })
    }

    pub fn attach(&self, ebpf: &mut Ebpf) -> Result<(), OomError> {
        let attach_err = |e: aya::programs::ProgramError| OomError::Attach(chain(&e));
        let program: &mut TracePoint =
            ebpf.program_mut("oom_mark_victim").ok_or(OomError::MissingProgram)?.try_into().map_err(attach_err)?;
        program.load().map_err(attach_err)?;
        program.attach("oom", "mark_victim").map_err(attach_err)?;
        Ok(())
    }

    pub fn decode(&self, ev: &OomVictimEvent, cgroups: &mut CgroupPaths) -> Option<MemcgOomKill> {
        let len = (ev.record_len as usize).min(ev.record.len());
        let record = &ev.record[..len];
        let pid = u32::try_from(int(record, &self.pid)?).ok()?;
        let task = cstr(&ev.task_comm);
        let victim_is_current = pid == ev.task_pid || pid == ev.task_tid;
        let (comm, comm_source) = match self.comm.as_ref().and_then(|f| data_loc_str(record, f)) {
            Some(c) => (Some(c), Some("record")),
            None if victim_is_current => (Some(task.clone()), Some("task")),
            None => match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                Ok(c) => (Some(c.trim_end().to_string()), Some("proc")),
                Err(_) => (None, None),
            },
        };
        let (cgroup_id, source) = if victim_is_current && ev.task_cgroup_id != 0 {
            (Some(ev.task_cgroup_id), CgroupSource::Process)
        } else {
            (self.proc_cgroup_id(pid), CgroupSource::Proc)
        };
        let kb = |f: &Option<Field>| f.as_ref().and_then(|f| int(record, f));
        Some(MemcgOomKill {
            comm_source,
            trigger_pid: ev.task_pid,
            trigger_comm: task,
            total_vm_kb: kb(&self.total_vm),
            anon_rss_kb: kb(&self.anon_rss),
            who: Attribution { pid: Some(pid), comm, ..cgroups.attribute(cgroup_id, source) },
        })
    }

    /// The victim's cgroup v2 id from /proc/PID/cgroup (`0::/path`).
    fn proc_cgroup_id(&self, pid: u32) -> Option<u64> {
        crate::cgroup::process_cgroup_id(self.cgroup2.as_ref()?, pid)
    }
}

impl crate::sources::Source for OomSource {
    fn kinds(&self) -> &'static [observer_common::EventKind] {
        &[observer_common::EventKind::OomVictim]
    }

    fn decode(
        &mut self,
        _: observer_common::EventKind,
        bytes: &[u8],
        cx: &mut crate::sources::Context<'_>,
        out: &mut Vec<crate::event::Record>,
    ) {
        let Some(raw) = crate::sources::read::<OomVictimEvent>(bytes) else { return };
        if let Some(kill) = OomSource::decode(self, &raw, cx.cgroups) {
            out.push(cx.record(raw.header.ts_ns, crate::event::Event::MemcgOomKill(kill)));
        }
    }

    fn ready(&self) -> String {
        "oom kills: oom:mark_victim".into()
    }
}

/// An unsigned integer field (4 or 8 bytes) of the record.
fn int(record: &[u8], f: &Field) -> Option<u64> {
    let bytes = record.get(f.offset..f.offset + f.size)?;
    match f.size {
        2 => Some(u64::from(u16::from_ne_bytes(bytes.try_into().ok()?))),
        4 => Some(u64::from(u32::from_ne_bytes(bytes.try_into().ok()?))),
        8 => Some(u64::from_ne_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

/// A `__data_loc char[]` field: a u32 holding (length << 16 | offset).
fn data_loc_str(record: &[u8], f: &Field) -> Option<String> {
    if !f.c_type.starts_with("__data_loc") {
        return None;
    }
    let loc = u32::try_from(int(record, f)?).ok()?;
    let (offset, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
    let s = cstr(record.get(offset..offset + len)?);
    (!s.is_empty()).then_some(s)
}

fn cstr(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_6_18_record() {
        let format = Format::parse(
            "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
             \tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\
             \tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n\
             \tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;\n",
        )
        .unwrap();
        let mut record = [0u8; 64];
        record[8..12].copy_from_slice(&4242u32.to_ne_bytes());
        record[12..16].copy_from_slice(&((5u32 << 16) | 24).to_ne_bytes());
        record[16..24].copy_from_slice(&100u64.to_ne_bytes());
        record[24..29].copy_from_slice(b"hog\0\0");
        let comm = format.field("comm").unwrap();
        assert_eq!(int(&record, format.field("pid").unwrap()), Some(4242));
        assert_eq!(data_loc_str(&record, comm).as_deref(), Some("hog"));
        assert_eq!(int(&record, format.field("total_vm").unwrap()), Some(100));
    }
}
