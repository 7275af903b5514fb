//! An episode as OpenTelemetry spans. Since 0.32 a `SpanBuilder` takes no
//! explicit ids nor an end time, so `SpanData` is built directly: the
//! engine's trace and span ids, the recorded start and end times.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    InstrumentationScope,
    trace::{Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanLinks},
};

use super::{attributes as attr, config::NodeResource, resource::workload_resource};
use crate::{
    correlate::episode::{Child, Episode, Folded, SpanRef},
    event::Event,
};

/// The instrumentation scope of every span: the agent, by name and version.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("observer").with_version(env!("CARGO_PKG_VERSION")).build()
}

fn time(unix_nano: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_nano)
}

fn context(trace_id: [u8; 16], span_id: [u8; 8], remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::SAMPLED,
        remote,
        TraceState::default(),
    )
}

fn span(
    ids: SpanRef,
    parent: SpanId,
    name: Cow<'static, str>,
    (start, end): (u64, u64),
    attributes: Vec<opentelemetry::KeyValue>,
    status: Status,
) -> SpanData {
    SpanData {
        span_context: context(ids.trace_id, ids.span_id, false),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name,
        start_time: time(start),
        // A span never ends before it starts, whatever the clocks said.
        end_time: time(end.max(start)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope(),
    }
}

/// The OOM kill's status message: the victim.
fn oom_message(child: &Child) -> Option<String> {
    let Event::MemcgOomKill(kill) = &child.record.event else { return None };
    let pid = kill.who.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
    Some(match &kill.who.comm {
        Some(comm) => format!("OOM kill of pid {pid} ({comm})"),
        None => format!("OOM kill of pid {pid}"),
    })
}

fn child_span(root: SpanRef, child: &Child) -> SpanData {
    let status = oom_message(child).map_or(Status::Unset, Status::error);
    span(
        SpanRef { trace_id: root.trace_id, span_id: child.span_id },
        SpanId::from_bytes(root.span_id),
        attr::record_kind(&child.record.event).into(),
        (child.start_unix_nano, child.end_unix_nano),
        attr::record_attributes(&child.record),
        status,
    )
}

fn folded_span(root: SpanRef, folded: &Folded) -> SpanData {
    span(
        SpanRef { trace_id: root.trace_id, span_id: folded.span_id },
        SpanId::from_bytes(root.span_id),
        format!("{}.folded", folded.kind).into(),
        (folded.start_unix_nano, folded.end_unix_nano),
        attr::folded_attributes(folded),
        Status::Unset,
    )
}

/// The episode's spans: the root first, then one per child and per folded
/// aggregate, all in the episode's trace.
pub fn episode_spans(episode: &Episode) -> Vec<SpanData> {
    let root = episode.root;
    let status = match episode.closed_by {
        crate::correlate::episode::CloseReason::OomKill => {
            let victim = episode.children.iter().rev().find_map(oom_message);
            Status::error(victim.unwrap_or_else(|| "closed by an OOM kill".into()))
        }
        _ => Status::Unset,
    };
    // The previous episode is another trace: a remote context, as the spec
    // has links to spans outside the trace.
    let links = episode.previous.map(|p| Link::with_context(context(p.trace_id, p.span_id, true)));
    let mut root_span = span(
        root,
        SpanId::INVALID,
        episode.kind.name().into(),
        (episode.start_unix_nano, episode.end_unix_nano),
        attr::root_attributes(episode),
        status,
    );
    root_span.links.links = links.into_iter().collect();
    let mut spans = Vec::with_capacity(1 + episode.children.len() + episode.folded.len());
    spans.push(root_span);
    spans.extend(episode.children.iter().map(|c| child_span(root, c)));
    spans.extend(episode.folded.iter().map(|f| folded_span(root, f)));
    spans
}

/// The episode as one export call: its workload's resource and its spans.
pub fn episode_batch(episode: &Episode, node: &NodeResource) -> (Resource, Vec<SpanData>) {
    (workload_resource(&episode.workload, node), episode_spans(episode))
}

#[cfg(test)]
mod tests {
    use opentelemetry::{KeyValue, Value};

    use super::*;
    use crate::export::otlp::testdata;

    fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv: &KeyValue| &kv.value)
    }

    #[test]
    fn root_span_of_an_oom_closed_episode() {
        let episode = testdata::episode_with_every_child();
        let spans = episode_spans(&episode);
        let root = &spans[0];
        assert_eq!(root.name, "memory.pressure");
        assert_eq!(root.span_context.trace_id(), TraceId::from_bytes(testdata::TRACE_ID));
        assert_eq!(root.span_context.span_id(), SpanId::from_bytes(testdata::ROOT_SPAN));
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert_eq!(root.start_time, time(testdata::T0));
        assert_eq!(root.end_time, time(testdata::T0 + 10_000));
        assert_eq!(root.status, Status::error("OOM kill of pid 4242 (server)"));
        assert_eq!(attr(root, "observer.episode.kind"), Some(&"memory.pressure".into()));
        assert_eq!(attr(root, "observer.episode.close_reason"), Some(&"oom_kill".into()));
        assert_eq!(attr(root, "observer.cgroup.id"), Some(&Value::I64(8123)));
        assert_eq!(attr(root, "observer.k8s.pod.qos"), Some(&"burstable".into()));
        assert_eq!(attr(root, "observer.memory.high.open"), Some(&Value::I64(100 << 20)));
        assert_eq!(attr(root, "observer.memory.max.open"), None, "no limit at open");
        assert_eq!(attr(root, "observer.memory.max.close"), Some(&Value::I64(128 << 20)));
        assert_eq!(attr(root, "observer.count.go.gc"), Some(&Value::I64(301)));
        assert_eq!(attr(root, "observer.count.memory_events.high"), Some(&Value::I64(3)));
        assert_eq!(attr(root, "observer.count.net.drop.NO_SOCKET"), Some(&Value::I64(7)));
        assert_eq!(root.links.len(), 1);
        let link = &root.links[0].span_context;
        assert_eq!((link.trace_id(), link.span_id()), (TraceId::from_bytes([0xcd; 16]), SpanId::from_bytes([0xee; 8])));
        assert_eq!(root.instrumentation_scope.name(), "observer");
    }

    #[test]
    fn children_and_folded_are_the_roots() {
        let episode = testdata::episode_with_every_child();
        let spans = episode_spans(&episode);
        assert_eq!(spans.len(), 1 + episode.children.len() + 1);
        let names: Vec<&str> = spans[1..].iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(
            names,
            ["go.gc", "go.assist", "memcg.throttle", "memcg.reclaim", "tcp.reset", "memcg.oom_kill", "go.gc.folded"]
        );
        for (s, c) in spans[1..].iter().zip(&episode.children) {
            assert_eq!(s.parent_span_id, SpanId::from_bytes(testdata::ROOT_SPAN));
            assert_eq!(s.span_context.trace_id(), TraceId::from_bytes(testdata::TRACE_ID));
            assert_eq!(s.span_context.span_id(), SpanId::from_bytes(c.span_id));
            assert_eq!(s.start_time, time(c.start_unix_nano));
            assert_eq!(s.end_time, time(c.end_unix_nano));
        }
        let oom = spans.iter().find(|s| s.name == "memcg.oom_kill").unwrap();
        assert_eq!(oom.status, Status::error("OOM kill of pid 4242 (server)"));
        assert_eq!(attr(oom, "observer.oom.victim.pid"), Some(&Value::I64(4242)));
        assert_eq!(attr(oom, "observer.oom.victim.comm"), Some(&"server".into()));
        assert_eq!(attr(oom, "process.pid"), None);
        let gc = spans.iter().find(|s| s.name == "go.gc").unwrap();
        assert_eq!(gc.status, Status::Unset);
        assert_eq!(attr(gc, "observer.go.gc.cycle"), Some(&Value::I64(17)));
        assert_eq!(attr(gc, "observer.go.gc.heap_goal_bytes"), Some(&Value::I64(8 << 20)));
        assert_eq!(attr(gc, "observer.go.gc.memory_limit_bytes"), Some(&Value::I64(i64::MAX)));
        let folded = spans.last().unwrap();
        assert_eq!(attr(folded, "observer.folded.kind"), Some(&"go.gc".into()));
        assert_eq!(attr(folded, "observer.folded.count"), Some(&Value::I64(300)));
        assert_eq!(folded.parent_span_id, SpanId::from_bytes(testdata::ROOT_SPAN));
    }

    #[test]
    fn quiet_episode_has_no_error_nor_link() {
        let mut episode = testdata::episode_with_every_child();
        episode.closed_by = crate::correlate::episode::CloseReason::Quiet;
        episode.previous = None;
        episode.children.retain(|c| !matches!(c.record.event, Event::MemcgOomKill(_)));
        episode.end_unix_nano = episode.start_unix_nano - 1; // a clock step back
        let spans = episode_spans(&episode);
        assert_eq!(spans[0].status, Status::Unset);
        assert!(spans[0].links.is_empty());
        assert_eq!(spans[0].end_time, spans[0].start_time);
        assert!(spans.iter().all(|s| s.status == Status::Unset));
    }

    #[test]
    fn batch_has_the_workloads_resource() {
        let node = NodeResource { attributes: vec![("k8s.cluster.name".into(), "prod".into())], host_name: None };
        let (resource, spans) = episode_batch(&testdata::episode_with_every_child(), &node);
        assert_eq!(resource.get(&"service.name".into()), Some("checkout".into()));
        assert_eq!(resource.get(&"k8s.cluster.name".into()), Some("prod".into()));
        assert!(!spans.is_empty());
    }
}
