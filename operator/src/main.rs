use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's allocator: in the 1,000-clinic bench glibc's malloc and free
/// were 40 % of the operator's CPU (perf, docs/benchmarks.md); mimalloc, tried too, cut that but
/// held 113 MiB where glibc held 65. The image's static musl build keeps musl's allocator.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: two arenas (it makes four per core, and RSS
/// follows the arenas in use), and freed pages given back within a second rather than ten.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 47] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Kubernetes operator that runs OpenMRS 3 platforms for clinics.
#[derive(Parser)]
#[command(name = "clinic-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the ClinicPlatform CustomResourceDefinition as YAML.
    Crd,
    /// Print the ClinicPlatform field reference (Markdown) generated from the CRD schema.
    #[command(hide = true)]
    ApiDocs,
    /// Print every object the operator would apply for the ClinicPlatform(s) in a file.
    Render {
        /// File with one or more ClinicPlatform documents ("-" for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace for documents that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The platform's policy file (the chart's `policy` values), so that `render` refuses
        /// what the operator would; without it, the default policy.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info,kube=warn")]
    log_filter: String,
    /// ClinicPlatforms reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Milliseconds the children's watches gather changes before each clinic they concern is
    /// reconciled, once: while a clinic converges its children change in bursts (each pod
    /// reported by its ReplicaSet and Deployment, the operator's own writes coming back). A
    /// change waits this long at most; a change to the ClinicPlatform itself does not wait.
    /// 0: a reconcile for every change.
    #[arg(long, env = "COALESCE_MS", default_value_t = 1000)]
    coalesce_ms: u64,
    /// Watch only these namespaces (comma-separated), with RBAC from namespaced Roles; empty
    /// watches every namespace with the ClusterRole.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Run several replicas with one active: only the holder of the Lease `clinic-operator`
    /// reconciles; the others wait (and report ready) until it goes away.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// The ConfigMap, in the operator's namespace (`POD_NAMESPACE`), where a restart finds which
    /// children were verified and unchanged since (docs/architecture.md); empty: none, every
    /// child is read after a restart. The chart's Role and admission policy allow the default
    /// name only.
    #[arg(long, env = "VERIFIED_LEDGER", default_value = clinic_operator::reconcile::ledger::DEFAULT_NAME)]
    verified_ledger: String,
    /// This replica's name in events (the pod name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// The platform's policy file (YAML): what clinics may point at, what counts as compliant.
    /// Without it, the default policy (docs/security.md#platform-policy). Read at start: a change
    /// needs a restart (the chart rolls the pod when its values change).
    #[arg(long, env = "POLICY_FILE")]
    policy: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::ApiDocs => emit(&clinic_operator::render::api_reference()),
        Command::Crd => match clinic_operator::render::crd_yaml() {
            Ok(yaml) => emit(&yaml),
            Err(e) => fail(&e.to_string()),
        },
        Command::Render { file, namespace, policy } => {
            let policy = match load_policy(policy.as_deref()) {
                Ok(p) => p,
                Err(e) => return fail(&e.to_string()),
            };
            let input = if file.as_os_str() == "-" {
                let mut s = String::new();
                match std::io::stdin().read_to_string(&mut s) {
                    Ok(_) => s,
                    Err(e) => return fail(&format!("cannot read standard input: {e}")),
                }
            } else {
                match std::fs::read_to_string(&file) {
                    Ok(s) => s,
                    Err(e) => return fail(&format!("cannot read {}: {e}", file.display())),
                }
            };
            match clinic_operator::render::render_with(&input, &namespace, &policy) {
                Ok(yaml) => emit(&yaml),
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}

fn load_policy(
    path: Option<&std::path::Path>,
) -> Result<clinic_operator::policy::Policy, clinic_operator::policy::PolicyError> {
    match path {
        Some(path) => clinic_operator::policy::Policy::from_file(path),
        None => Ok(clinic_operator::policy::Policy::default()),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let filter = match tracing_subscriber::EnvFilter::try_new(&args.log_filter) {
        Ok(f) => f,
        Err(e) => return fail(&format!("--log-filter: {e}")),
    };
    // stdout, like every container of the platform: a Loki/Alloy agent collects it as is.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run_controller(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

async fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    use clinic_operator::{metrics::Metrics, reconcile, server};
    let policy = Arc::new(load_policy(args.policy.as_deref())?);
    tracing::info!(policy = ?args.policy, "platform policy loaded");
    let client = kube::Client::try_default().await.context("no usable Kubernetes configuration")?;
    let metrics = Arc::new(Metrics::new());
    // One controller per watched namespace (namespaced mode), or one for the whole cluster.
    let scopes: Vec<Option<String>> = if args.watch_namespaces.is_empty() {
        vec![None]
    } else {
        args.watch_namespaces.iter().filter(|n| !n.is_empty()).cloned().map(Some).collect()
    };
    let controllers: Vec<_> = scopes
        .into_iter()
        .map(|scope| (scope, reconcile::caches::Caches::new_for(&policy.velero_namespaces)))
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let all_caches = controllers.iter().map(|(_, (caches, _))| caches.clone()).collect();
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(!args.leader_election));
    let server = tokio::spawn(server::serve(
        args.metrics_addr,
        metrics.clone(),
        all_caches,
        leading.clone(),
        stopped(stop_rx.clone()),
    ));

    // Leader election: wait for the Lease before watching anything.
    let leadership = if args.leader_election {
        match wait_to_lead(&client, &args, stop_rx.clone()).await? {
            Some(leadership) => Some(leadership),
            None => return Ok(()),
        }
    } else {
        None
    };
    leading.store(true, std::sync::atomic::Ordering::Release);

    // Read once the Lease is held: the previous leader wrote its last entries before letting go.
    let ledger = Arc::new(match args.verified_ledger.as_str() {
        "" => reconcile::ledger::Ledger::disabled(),
        name => reconcile::ledger::Ledger::load(client.clone(), &args.leader_election_namespace, name).await,
    });
    let flusher = {
        let (ledger, metrics) = (ledger.clone(), metrics.clone());
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { ledger.run(&metrics, stop).await })
    };
    let runs = controllers.into_iter().map(|(namespace, (caches, writers))| {
        let config = reconcile::RunConfig {
            concurrency: args.concurrency,
            coalesce: std::time::Duration::from_millis(args.coalesce_ms),
            instance: args.pod_name.clone(),
            namespace,
            policy: policy.clone(),
            ledger: ledger.clone(),
        };
        reconcile::run(client.clone(), config, metrics.clone(), caches, writers, stopped(stop_rx.clone()))
    });
    let controllers = futures::future::join_all(runs);
    match leadership {
        None => {
            controllers.await;
        }
        Some(leadership) => run_while_leading(controllers, leadership).await?,
    }
    // Its last write, after the controllers stopped.
    let _ = flusher.await;
    match server.await {
        Ok(result) => result.context("metrics server")?,
        Err(e) => anyhow::bail!("metrics server task: {e}"),
    }
    Ok(())
}

/// The Lease this replica holds, and the task that renews it.
type Leadership = (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
);

/// Waits until this replica holds the leader-election Lease; `None` if asked to stop first.
async fn wait_to_lead(
    client: &kube::Client,
    args: &RunArgs,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<Leadership>> {
    let identity = args.pod_name.clone().unwrap_or_else(|| format!("clinic-operator-{}", std::process::id()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "clinic-operator")
        .with_namespace(&args.leader_election_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .with_field_manager("clinic-operator-leader-election")
        .build()
        .await
        .context("leader election")?;
    let (mut channel, task) = manager.watch().await;
    tracing::info!(%identity, namespace = %args.leader_election_namespace, "waiting to lead");
    while !*channel.borrow_and_update() {
        tokio::select! {
            changed = channel.changed() => changed.context("leader election stopped")?,
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
    }
    tracing::info!(%identity, "leading");
    Ok(Some((channel, task)))
}

/// Runs the controllers as long as the Lease is held; losing it is an error (the replica
/// restarts as a standby rather than reconcile beside a new leader).
async fn run_while_leading(
    controllers: impl Future<Output = Vec<()>>,
    (mut channel, task): Leadership,
) -> anyhow::Result<()> {
    let lost = async {
        loop {
            if channel.changed().await.is_err() || !*channel.borrow_and_update() {
                break;
            }
        }
    };
    tokio::select! {
        _ = controllers => {}
        _ = lost => anyhow::bail!("lost the leader-election Lease: exiting so that this replica restarts as a standby"),
    }
    // Shutting down: closing the channel releases the Lease for the next replica.
    drop(channel);
    let _ = task.await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Writes to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&format!("cannot write output: {e}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
