//! Events on the ClinicPlatform: what a pass found worth telling the person running
//! `kubectl describe`. Best effort: a failure to record one never fails the reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use super::context::Context;

/// Notes are cut to this many bytes.
const NOTE_LIMIT: usize = 1000;

/// Something worth an event on the ClinicPlatform.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
    /// The child the event is about. Events with the same reason are counted as one series per
    /// related object, so each drifted child keeps its own message.
    pub related: Option<ObjectReference>,
}

impl Notice {
    pub fn normal(reason: &'static str, message: String) -> Self {
        Self { type_: EventType::Normal, reason, message, related: None }
    }
    pub fn warning(reason: &'static str, message: String) -> Self {
        Self { type_: EventType::Warning, reason, message, related: None }
    }
    pub fn about(mut self, related: ObjectReference) -> Self {
        self.related = Some(related);
        self
    }
}

/// Records each notice as an event on `reference`.
pub async fn publish(ctx: &Context, reference: &ObjectReference, notices: &[Notice]) {
    for notice in notices {
        let event = Event {
            type_: notice.type_,
            reason: notice.reason.to_string(),
            note: Some(truncate(&notice.message, NOTE_LIMIT)),
            action: "Reconcile".to_string(),
            secondary: notice.related.clone(),
        };
        ctx.metrics.record_write("event");
        if let Err(e) = ctx.recorder.publish(&event, reference).await {
            warn!(error = %e, reason = notice.reason, "could not record event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
