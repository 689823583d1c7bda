//! The watches that fill the caches and trigger reconciles, and the controller that runs them:
//! ClinicPlatforms (whole, listed in pages), every child kind by the managed-by label
//! (workloads whole, the rest as metadata only; both kept as records), Secrets as metadata
//! kept as records, and namespaces' labels; and, where their APIs are served, the children of
//! the Prometheus Operator's kinds, Velero's Schedules (metadata) and Backups (whole), kept as
//! records.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;
use tracing::{debug, info};

use super::caches::{self, CacheWriters, Caches, VeleroWriters};
use super::context::Context;
use super::discovery::DISCOVERY_TTL;
use super::{error_policy, reconcile};
use crate::api::ClinicPlatform;
use crate::metrics::Metrics;

/// Objects per page when full objects (ClinicPlatforms, workloads) are listed.
const LIST_PAGE: u32 = 50;

/// Objects per page when metadata is listed. Unpaged, a list at a thousand clinics (7,000
/// NetworkPolicies, 6,000 Secrets, each with its managedFields) came as one response of several
/// MiB, decoded whole: most of a restarted operator's peak memory. A restart lists
/// [`LISTS_AT_ONCE`] kinds at a time, each holding its page while it is decoded.
const METADATA_PAGE: u32 = 100;

/// Kinds listed at once. A restart lists every watched kind (about thirty at a thousand
/// clinics: 24 child kinds, Secrets, namespaces, ClinicPlatforms, the optional APIs), and each
/// list holds its page, raw and decoded, while the next is asked for: all at once, those pages
/// made a restarted operator's peak memory. Each watch waits its turn for its first list only.
const LISTS_AT_ONCE: usize = 4;

/// `events` (a watch), whose first list waits for a permit of `lists` and holds it until the
/// list is done (or fails: a list asked again after an error does not wait).
fn listed_in_turn<K: Send + 'static>(
    lists: &Arc<Semaphore>,
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> BoxStream<'static, Result<watcher::Event<K>, watcher::Error>> {
    let lists = lists.clone();
    futures::stream::once(async move {
        let mut permit = lists.acquire_owned().await.ok();
        events.inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone) | Err(_)) {
                drop(permit.take());
            }
        })
    })
    .flatten()
    .boxed()
}

/// Maps a child to its ClinicPlatform: by the instance label (present on every child, also on
/// Secrets that carry no owner reference), else by the controller owner reference.
pub(super) fn owner_of<K: Resource>(child: &K) -> Option<ObjectRef<Clinic>> {
    let meta = child.meta();
    let namespace = meta.namespace.as_deref()?;
    let by_label = meta.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/instance")).cloned();
    let by_owner = || {
        meta.owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "ClinicPlatform")
            .map(|o| o.name.clone())
    };
    let name = by_label.or_else(by_owner)?;
    Some(ObjectRef::new(&name).within(namespace))
}

/// Maps a Velero object to its ClinicPlatform: by the labels that name the clinic's namespace
/// and name (Velero's objects live in Velero's namespace, and no owner reference crosses
/// namespaces).
fn clinic_of_velero_object(object: &DynamicObject) -> Option<ObjectRef<Clinic>> {
    let labels = object.meta().labels.as_ref()?;
    let namespace = labels.get(crate::desired::backup::CLINIC_NAMESPACE_LABEL)?;
    let name = labels.get("app.kubernetes.io/instance")?;
    Some(ObjectRef::new(name).within(namespace))
}

/// Runtime settings of the controller.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Reconciles running at once.
    pub concurrency: u16,
    /// How long the children's watches gather changes before each clinic's reconcile is asked
    /// for, once ([`coalesced`]).
    pub coalesce: std::time::Duration,
    /// Identity in events (the pod name).
    pub instance: Option<String>,
    /// Watch only this namespace (namespaced mode, RBAC through a Role); `None` watches all.
    pub namespace: Option<String>,
    /// The platform team's policy.
    pub policy: Arc<crate::policy::Policy>,
    /// What a restart keeps of the verified children (shared by every watched namespace).
    pub ledger: Arc<super::ledger::Ledger>,
}

/// Watches and reconciles until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
    caches: Caches,
    writers: CacheWriters,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let scope = config.namespace.as_deref();
    let lists = Arc::new(Semaphore::new(LISTS_AT_ONCE));
    let (clinics, clinics_reader) = clinic_stream(&client, scope, &lists);
    let probed_clinics = clinics_reader.clone();
    let mut controller = Controller::for_stream(clinics, clinics_reader);
    // What the children's watches ask for: a reconcile of the clinic each object belongs to.
    let mut triggers: Vec<BoxStream<'static, ObjectRef<Clinic>>> = Vec::new();
    for (ar, mut writer) in writers.children {
        let stream = listed_in_turn(&lists, child_events(&client, scope, &ar))
            .default_backoff()
            .inspect_ok(move |event| writer.apply_watcher_event(event))
            .touched_objects();
        triggers.push(clinics_of(stream, ar.kind.clone(), |o: &DynamicObject| owner_of(o)));
    }
    // Optional APIs: each watch starts once its API is served; until its cache is in step, what
    // it would hold is read.
    for (ar, mut writer) in writers.optional {
        let events = listed_in_turn(&lists, metadata_events(&client, scope, &ar));
        let apply = move |result: &WatchResult| writer.apply_watcher_result(result);
        triggers.push(watch_optional(&client, ar, scope, events, apply, owner_of::<DynamicObject>));
    }
    for VeleroWriters { namespace, mut schedules, mut backups } in writers.velero {
        let namespace = namespace.as_deref();
        let schedule = crate::desired::backup::schedule_resource();
        let events = listed_in_turn(&lists, metadata_events(&client, namespace, &schedule));
        let apply = move |result: &WatchResult| schedules.apply_watcher_result(result);
        triggers.push(watch_optional(&client, schedule, namespace, events, apply, clinic_of_velero_object));
        let backup = crate::desired::backup::backup_resource();
        // Whole: health reads their status. Those that name a clinic (the Schedules' template
        // and the upgrade gate label them so), as the list they replace selected them.
        let config = watcher::Config::default()
            .labels(crate::desired::backup::CLINIC_NAMESPACE_LABEL)
            .page_size(LIST_PAGE);
        let events = watcher(scoped_with::<DynamicObject>(&client, namespace, &backup), config);
        let events = listed_in_turn(&lists, events).modify(|o| o.managed_fields_mut().clear()).boxed();
        let apply = move |result: &WatchResult| backups.apply_watcher_result(result);
        triggers.push(watch_optional(&client, backup, namespace, events, apply, clinic_of_velero_object));
    }
    let mut secret_writer = writers.secrets;
    let secrets = watcher(scoped::<PartialObjectMeta<Secret>>(&client, scope), children_config());
    let secrets = listed_in_turn(&lists, secrets)
        .default_backoff()
        .inspect_ok(move |event| secret_writer.apply_watcher_event(event))
        .touched_objects();
    triggers.push(clinics_of(secrets, "Secret".into(), |o: &PartialObjectMeta<Secret>| owner_of(o)));
    controller = controller.reconcile_on(coalesced(futures::stream::select_all(triggers), config.coalesce));
    controller = watch_namespaces(controller, &client, scope.is_none(), writers.namespaces, &lists);

    let synced = caches.clone();
    tokio::spawn(async move {
        synced.wait_ready().await;
        info!("watches synced");
    });
    let probe_policy = config.policy.clinic_probe.clone();
    let mut context = Context::new(client, caches, metrics, config.instance)
        .with_policy(config.policy)
        .with_ledger(config.ledger);
    context.cluster_scope = scope.is_none();
    let context = Arc::new(context);
    // The operator's own probes ask for a reconcile when a clinic's verdict changes.
    let (probe_verdicts, changed_verdicts) = futures::channel::mpsc::channel(256);
    let prober = probe_policy.map(|policy| {
        tokio::spawn(super::probe::run(context.clone(), policy, probed_clinics, probe_verdicts))
    });
    controller
        .with_config(ControllerConfig::default().concurrency(config.concurrency))
        .reconcile_on(changed_verdicts)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        })
        .await;
    if let Some(prober) = prober {
        prober.abort();
    }
    info!("controller stopped");
}

type Clinic = DeserializeGuard<ClinicPlatform>;

type WatchResult = Result<watcher::Event<DynamicObject>, watcher::Error>;

/// The watch of an optional API's kind `ar` in `namespace` (all for `None`): `events` from the
/// moment the API is served ([`once_served`]), each applied to its cache by `apply`; yields the
/// clinic of each object, found by `clinic_of`.
fn watch_optional(
    client: &Client,
    ar: ApiResource,
    namespace: Option<&str>,
    events: BoxStream<'static, WatchResult>,
    mut apply: impl FnMut(&WatchResult) + Send + 'static,
    clinic_of: fn(&DynamicObject) -> Option<ObjectRef<Clinic>>,
) -> BoxStream<'static, ObjectRef<Clinic>> {
    let stream = once_served(client, &ar, namespace, events)
        .default_backoff()
        .inspect(move |result| apply(result))
        .touched_objects();
    clinics_of(stream, ar.kind, clinic_of)
}

/// The clinic of each object a watch of `kind` touched, for those that belong to one. A watch
/// error is only logged: the watch retries with backoff, and its cache tells readers it is out
/// of step.
fn clinics_of<K: Send + 'static>(
    objects: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    kind: String,
    clinic_of: impl Fn(&K) -> Option<ObjectRef<Clinic>> + Send + 'static,
) -> BoxStream<'static, ObjectRef<Clinic>> {
    objects
        .filter_map(move |touched| {
            let clinic = match touched {
                Ok(object) => clinic_of(&object),
                Err(error) => {
                    debug!(%error, %kind, "watch failed; retrying with backoff");
                    None
                }
            };
            futures::future::ready(clinic)
        })
        .boxed()
}

/// Triggers most a window can hold: a watch (re)listing thousands of children fills it at once.
const TRIGGERS_PER_WINDOW: usize = 4096;

/// `triggers` gathered for `window` from the first one, then each clinic once, in the order
/// first asked: the children of a converging clinic change in bursts (each pod reported by its
/// ReplicaSet and Deployment, the operator's own writes coming back), and a burst leads to one
/// reconcile instead of one per change. A trigger waits `window` at most, however busy the
/// clinic (a debounce that waits for quiet would keep postponing one whose objects never stop
/// changing). A zero window passes every trigger on at once.
fn coalesced(
    triggers: impl Stream<Item = ObjectRef<Clinic>> + Send + 'static,
    window: std::time::Duration,
) -> BoxStream<'static, ObjectRef<Clinic>> {
    if window.is_zero() {
        return triggers.boxed();
    }
    tokio_stream::StreamExt::chunks_timeout(triggers, TRIGGERS_PER_WINDOW, window)
        .flat_map(|batch| {
            let mut seen = std::collections::HashSet::with_capacity(batch.len());
            let unique: Vec<_> = batch.into_iter().filter(|clinic| seen.insert(clinic.clone())).collect();
            futures::stream::iter(unique)
        })
        .boxed()
}

/// An Api over the watched scope: one namespace (namespaced mode) or all.
fn scoped<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// [`scoped`] for a kind known at run time.
fn scoped_with<K: Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>>(
    client: &Client,
    scope: Option<&str>,
    ar: &ApiResource,
) -> Api<K> {
    match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// What every metadata watch of children selects: the objects the operator manages, listed in
/// pages (a paged list is a consistent read: `resourceVersion=0` would serve it whole).
fn children_config() -> watcher::Config {
    watcher::Config::default().labels(&caches::managed_selector()).page_size(METADATA_PAGE)
}

/// The ClinicPlatforms, reflected into their own store.
fn clinic_stream(
    client: &Client,
    scope: Option<&str>,
    lists: &Arc<Semaphore>,
) -> (impl Stream<Item = Result<Clinic, watcher::Error>> + Send + 'static, Store<Clinic>) {
    let (reader, writer) = kube::runtime::reflector::store();
    // Full objects are listed in pages (a resourceVersion=0 list is served whole, whatever the
    // fleet's size, and its decoding was the operator's peak memory).
    let events = watcher(scoped::<Clinic>(client, scope), watcher::Config::default().page_size(LIST_PAGE));
    let stream = listed_in_turn(lists, events)
        // Cached without managedFields: those entries (kubectl's, ours for the status) describe
        // every field and would be most of each cached object.
        .modify(|cp: &mut Clinic| match &mut cp.0 {
            Ok(cp) => cp.metadata.managed_fields = None,
            Err(invalid) => invalid.metadata.managed_fields = None,
        })
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    (stream, reader)
}

/// The events of one child kind. Workloads are watched whole (status and images are read from
/// them); every other kind as metadata only, so that the API server never sends, and the
/// operator never decodes, their bodies (dashboards, nginx configurations...).
fn child_events(
    client: &Client,
    scope: Option<&str>,
    ar: &ApiResource,
) -> BoxStream<'static, Result<watcher::Event<DynamicObject>, watcher::Error>> {
    let types = kube::core::TypeMeta { api_version: ar.api_version.clone(), kind: ar.kind.clone() };
    if caches::is_workload(&ar.kind) {
        let config = watcher::Config::default().labels(&caches::managed_selector()).page_size(LIST_PAGE);
        watcher(scoped_with::<DynamicObject>(client, scope, ar), config)
            .modify(move |o| {
                // List items carry no apiVersion/kind; the record needs them.
                o.types = Some(types.clone());
                o.managed_fields_mut().clear();
            })
            .boxed()
    } else {
        metadata_events(client, scope, ar)
    }
}

/// `events` (a watch of `ar` in `namespace`, all namespaces for `None`; it asks nothing before
/// it is polled), from the moment the API server serves `ar` and lets this operator list and
/// watch it there. Until then only discovery and an access review are asked, every
/// [`DISCOVERY_TTL`]: a cluster without the optional API, or a Velero namespace of the policy
/// that has no Role of the operator yet (the chart makes it where the namespace exists), is not
/// asked for lists it would refuse, nor the log filled with those refusals.
fn once_served<T: Send + 'static>(
    client: &Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    events: BoxStream<'static, T>,
) -> BoxStream<'static, T> {
    let (client, ar, namespace) = (client.clone(), ar.clone(), namespace.map(String::from));
    let served = async move {
        loop {
            let served = match client.list_api_group_resources(&ar.api_version).await {
                Ok(list) => list.resources.iter().any(|r| r.name == ar.plural),
                Err(_) => false,
            };
            if served
                && may(&client, "list", &ar, namespace.as_deref()).await
                && may(&client, "watch", &ar, namespace.as_deref()).await
            {
                break;
            }
            tokio::time::sleep(DISCOVERY_TTL).await;
        }
        debug!(kind = %ar.kind, namespace = ?namespace, "optional API served and allowed: watching it");
        events
    };
    futures::stream::once(served).flatten().boxed()
}

/// Whether this operator may `verb` the objects of `ar` in `namespace` (`None`: all), as the
/// API server's authorizer answers a self access review (which every account may ask).
async fn may(client: &Client, verb: &str, ar: &ApiResource, namespace: Option<&str>) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(ar.group.clone()),
                resource: Some(ar.plural.clone()),
                verb: Some(verb.to_string()),
                namespace: namespace.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match reviews.create(&kube::api::PostParams::default(), &review).await {
        Ok(answer) => answer.status.is_some_and(|s| s.allowed),
        Err(e) => {
            debug!(error = %e, "access review failed");
            false
        }
    }
}

/// The events of one kind watched as metadata only (`types` set on each object).
fn metadata_events(
    client: &Client,
    scope: Option<&str>,
    ar: &ApiResource,
) -> BoxStream<'static, Result<watcher::Event<DynamicObject>, watcher::Error>> {
    let types = kube::core::TypeMeta { api_version: ar.api_version.clone(), kind: ar.kind.clone() };
    // An Api of PartialObjectMeta asks the API server for metadata only.
    watcher(scoped_with::<PartialObjectMeta<DynamicObject>>(client, scope, ar), children_config())
        .map_ok(move |event| caches::metadata_event(event, &types))
        .boxed()
}

/// Namespace labels (Pod Security) are part of the secure state: a change re-reconciles every
/// clinic of that namespace. A namespaced operator cannot see namespaces (they are
/// cluster-scoped): its namespace cache stays empty and the platform team labels them.
fn watch_namespaces(
    controller: Controller<Clinic>,
    client: &Client,
    cluster_scope: bool,
    mut writer: Writer<PartialObjectMeta<Namespace>>,
    lists: &Arc<Semaphore>,
) -> Controller<Clinic> {
    if !cluster_scope {
        // Marked as listed (and empty), so that readiness does not wait for a watch that never
        // runs. The writer may go then: readers keep the store, and stay ready.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        return controller;
    }
    let clinics = controller.store();
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default().page_size(METADATA_PAGE),
    );
    let namespaces = listed_in_turn(lists, namespaces)
        // Only the labels are read.
        .modify(|o| {
            o.managed_fields_mut().clear();
            o.annotations_mut().clear();
        })
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    controller.watches_stream(namespaces, move |ns: PartialObjectMeta<Namespace>| {
        let name = ns.name_any();
        clinics
            .state()
            .into_iter()
            .filter(|cp| cp.meta().namespace.as_deref() == Some(name.as_str()))
            .map(|cp| ObjectRef::from_obj(cp.as_ref()))
            .collect::<Vec<_>>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::time::Duration;
    use watcher::Event;

    fn listing(
        objects: &[&str],
    ) -> impl Stream<Item = Result<Event<String>, watcher::Error>> + Send + 'static {
        let mut events = vec![Ok(Event::Init)];
        events.extend(objects.iter().map(|o| Ok(Event::InitApply(o.to_string()))));
        events.push(Ok(Event::InitDone));
        // A watch goes on after its list: it never ends.
        futures::stream::iter(events).chain(futures::stream::pending())
    }

    #[tokio::test]
    async fn a_watch_lists_only_once_an_earlier_list_is_done() {
        let lists = Arc::new(Semaphore::new(1));
        let mut first = listed_in_turn(&lists, listing(&["a"]));
        let mut second = listed_in_turn(&lists, listing(&["b"]));
        assert!(matches!(first.next().await, Some(Ok(Event::Init))));
        assert!(second.next().now_or_never().is_none(), "the second list waits while the first runs");
        assert!(matches!(first.next().await, Some(Ok(Event::InitApply(_)))));
        assert!(second.next().now_or_never().is_none());
        assert!(matches!(first.next().await, Some(Ok(Event::InitDone))));
        assert!(matches!(second.next().await, Some(Ok(Event::Init))), "its turn once the first is listed");
        assert_eq!(lists.available_permits(), 0);
        assert!(matches!(second.next().await, Some(Ok(Event::InitApply(_)))));
        assert!(matches!(second.next().await, Some(Ok(Event::InitDone))));
        assert_eq!(lists.available_permits(), 1, "a listed watch holds no permit");
    }

    #[tokio::test]
    async fn a_failed_list_gives_its_turn_away() {
        let lists = Arc::new(Semaphore::new(1));
        let failing = futures::stream::iter(vec![Ok(Event::Init), Err(watcher::Error::NoResourceVersion)])
            .chain(futures::stream::pending());
        let mut first = listed_in_turn::<String>(&lists, failing);
        assert!(matches!(first.next().await, Some(Ok(Event::Init))));
        assert_eq!(lists.available_permits(), 0);
        assert!(first.next().await.is_some_and(|e| e.is_err()));
        assert_eq!(lists.available_permits(), 1);
    }

    fn clinic(name: &str) -> ObjectRef<Clinic> {
        ObjectRef::new(name).within("ns")
    }

    /// Triggers sent every `every`, `count` times, for the clinics of `names` in turn; what
    /// `coalesced` passes on in ten seconds, with the (paused, virtual) time since the start.
    async fn passed_on(names: &[&'static str], every: Duration, count: usize) -> Vec<(String, Duration)> {
        let started = tokio::time::Instant::now();
        let names = names.to_vec();
        let sent = futures::stream::iter(0..count).then(move |i| {
            let name = names[i % names.len()];
            async move {
                if i > 0 {
                    tokio::time::sleep(every).await;
                }
                clinic(name)
            }
        });
        // A watch never ends: the triggers are followed by silence, and what came out in ten
        // seconds is the answer.
        coalesced(sent.chain(futures::stream::pending()), Duration::from_secs(1))
            .map(|c| (c.name, started.elapsed()))
            .take_until(tokio::time::sleep(Duration::from_secs(10)))
            .collect()
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_triggers_is_one_per_clinic_a_window_later() {
        let out = passed_on(&["a", "b", "a", "a", "b"], Duration::from_millis(10), 5).await;
        let names: Vec<_> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"], "each clinic once, in the order first asked");
        assert!(out.iter().all(|(_, at)| *at == Duration::from_secs(1)), "{out:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clinic_that_never_stops_changing_is_still_reconciled_every_window() {
        // A trigger every 250 ms for 5 s: a debounce waiting for a quiet second never fires.
        let out = passed_on(&["busy"], Duration::from_millis(250), 20).await;
        assert!((4..=6).contains(&out.len()), "{out:?}");
        assert!(out[0].1 <= Duration::from_secs(1), "the first waits one window at most: {out:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_passes_every_trigger_on() {
        let sent = futures::stream::iter([clinic("a"), clinic("a")]);
        assert_eq!(coalesced(sent, Duration::ZERO).count().await, 2);
    }
}
