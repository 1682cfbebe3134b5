//! `kubectl wasmover`: the plugin's command line. The `wasmover` binary
//! runs it when it is called as `kubectl-wasmover` (the symlink
//! `scripts/setup` installs, which kubectl finds on PATH); the work is in
//! [`wasmover_operator::kubectl`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::DecimalBytes as HumanBytes;
use wasmover_operator::crd::SyncStatus;
use wasmover_operator::kubectl::relationship::{
    Destination, Kind, Place, Relationship, Source, Store, VolumeOptions,
};
use wasmover_operator::kubectl::replication::{self, Clusters, Trigger};
use wasmover_operator::kubectl::{Error, args, contexts, migration};

/// Replicate PVCs across kubeconfig contexts with wasmover, and migrate
/// local directories into PVCs.
#[derive(Parser)]
#[command(name = "kubectl wasmover", bin_name = "kubectl wasmover", version)]
pub struct Plugin {
    /// Where relationship files are kept [default: $XDG_CONFIG_HOME/wasmover/relationships or ~/.config/wasmover/relationships]
    #[arg(long, global = true, env = "WASMOVER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// The kubeconfig [default: $KUBECONFIG, else ~/.kube/config]
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    group: Group,
}

#[derive(Subcommand)]
enum Group {
    /// Replicate a PVC to a ReplicationDestination, in the same or another
    /// cluster.
    Replication {
        #[command(subcommand)]
        command: ReplicationCommand,
    },
    /// Move a local directory into a PVC.
    Migration {
        #[command(subcommand)]
        command: MigrationCommand,
    },
}

#[derive(Subcommand)]
enum ReplicationCommand {
    /// Start a relationship NAME (a file; nothing is created in a cluster
    /// until `sync` or `schedule`).
    Create { name: String },
    /// Set where the replica is received.
    SetDestination {
        name: String,
        #[command(flatten)]
        place: PlaceArgs,
        /// Receive into this existing PVC instead of provisioning one.
        #[arg(long)]
        pvc: Option<String>,
        /// Size of the PVC to provision [default: the source PVC's]
        #[arg(long)]
        capacity: Option<String>,
        #[command(flatten)]
        volume: VolumeArgs,
        /// How sources reach it: ClusterIP, NodePort or LoadBalancer
        /// (another cluster's sources need a LoadBalancer) [default: ClusterIP]
        #[arg(long)]
        service_type: Option<String>,
    },
    /// Set the PVC to replicate.
    SetSource {
        name: String,
        #[command(flatten)]
        place: PlaceArgs,
        /// The PVC to replicate.
        #[arg(long)]
        pvc: String,
        #[command(flatten)]
        volume: VolumeArgs,
    },
    /// Replicate on a cron schedule (five fields or @hourly, ..., in UTC);
    /// creates or updates both sides.
    Schedule {
        name: String,
        /// The schedule, e.g. '*/10 * * * *'.
        #[arg(long)]
        cronspec: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Synchronize once now: creates or updates both sides, triggers them
    /// and waits, showing progress; fails with the reason if it fails.
    /// Replaces a schedule.
    Sync {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show both sides' state.
    Status { name: String },
    /// Delete both sides' objects (and with the destination, the PVC and
    /// snapshots it provisioned) and the relationship.
    Delete { name: String },
}

#[derive(Subcommand)]
enum MigrationCommand {
    /// Create a ReplicationDestination receiving into a PVC (created when
    /// missing), and the relationship NAME.
    Create {
        name: String,
        #[command(flatten)]
        place: PlaceArgs,
        /// The PVC to fill; created with --capacity if it does not exist.
        #[arg(long)]
        pvc: String,
        /// Size of the PVC to create.
        #[arg(long)]
        capacity: Option<String>,
        #[command(flatten)]
        volume: VolumeArgs,
    },
    /// Send a local directory to the PVC (through the API server's
    /// port-forward) and wait until it is there; again, only what changed
    /// moves.
    Rsync {
        name: String,
        /// The local directory.
        #[arg(long)]
        source: PathBuf,
        /// Seconds to wait for each step (the agent starting, the transfer
        /// completing).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Delete the ReplicationDestination and the relationship; the PVC and
    /// its data stay.
    Delete { name: String },
}

/// Where a side's object is.
#[derive(Args)]
struct PlaceArgs {
    /// The kubeconfig context [default: the current one, recorded by name]
    #[arg(long)]
    context: Option<String>,
    /// The namespace [default: the context's]
    #[arg(long, short)]
    namespace: Option<String>,
    /// The object's name [default: the relationship's]
    #[arg(long = "object-name")]
    object_name: Option<String>,
}

/// VolSync's volume options.
#[derive(Args)]
struct VolumeArgs {
    /// Direct, Clone or Snapshot [default: Direct]
    #[arg(long)]
    copy_method: Option<String>,
    /// StorageClass of what is provisioned.
    #[arg(long)]
    storage_class: Option<String>,
    /// VolumeSnapshotClass for Snapshot.
    #[arg(long)]
    volume_snapshot_class: Option<String>,
    /// Access mode of what is provisioned (repeatable).
    #[arg(long = "access-mode")]
    access_modes: Vec<String>,
}

impl VolumeArgs {
    fn check(&self) -> Result<VolumeOptions, Error> {
        Ok(VolumeOptions {
            copy_method: self
                .copy_method
                .as_deref()
                .map(args::copy_method)
                .transpose()?
                .unwrap_or_default(),
            storage_class: self.storage_class.clone(),
            volume_snapshot_class: self.volume_snapshot_class.clone(),
            access_modes: self
                .access_modes
                .iter()
                .map(|m| args::access_mode(m))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// How long to wait.
#[derive(Args)]
struct WaitArgs {
    /// Seconds to wait for the destination's address and key.
    #[arg(long, default_value_t = replication::ENDPOINT_TIMEOUT.as_secs())]
    endpoint_timeout: u64,
    /// Seconds to wait for the synchronization [default: until it ends]
    #[arg(long)]
    timeout: Option<u64>,
}

/// Whether the binary was called as the plugin.
pub fn called_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_owned()))
        .is_some_and(|n| n == "kubectl-wasmover")
}

/// Runs the plugin.
pub fn run(plugin: &Plugin) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(dispatch(plugin))?;
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(plugin: &Plugin) -> Result<(), Error> {
    let store = Store::new(plugin.config_dir.clone())?;
    let kubeconfig = || contexts::kubeconfig(plugin.kubeconfig.as_deref());
    match &plugin.group {
        Group::Replication { command } => replication(command, &store, kubeconfig).await,
        Group::Migration { command } => migration(command, &store, kubeconfig).await,
    }
}

async fn replication(
    command: &ReplicationCommand,
    store: &Store,
    kubeconfig: impl Fn() -> Result<kube::config::Kubeconfig, Error>,
) -> Result<(), Error> {
    match command {
        ReplicationCommand::Create { name } => {
            let relationship = Relationship::new(Kind::Replication, name)?;
            store.create(&relationship)?;
            println!(
                "created replication {name} ({}); next: set-destination, set-source, then sync or schedule",
                store.path(name).display()
            );
        }
        ReplicationCommand::SetDestination {
            name,
            place,
            pvc,
            capacity,
            volume,
            service_type,
        } => {
            let mut relationship = store.load(name, Kind::Replication)?;
            let destination = Destination {
                place: place.resolve(&kubeconfig()?, name)?,
                pvc: pvc.clone(),
                capacity: capacity.as_deref().map(args::capacity).transpose()?,
                volume: volume.check()?,
                service_type: service_type
                    .as_deref()
                    .map(|t| args::service_type(t).map(|t| t.as_str().to_owned()))
                    .transpose()?,
                applied: false,
            };
            let said = format!("destination of {name}: {}", destination.place);
            relationship.set_destination(destination)?;
            store.save(&relationship)?;
            println!("{said}");
        }
        ReplicationCommand::SetSource {
            name,
            place,
            pvc,
            volume,
        } => {
            let mut relationship = store.load(name, Kind::Replication)?;
            let source = Source {
                place: place.resolve(&kubeconfig()?, name)?,
                pvc: pvc.clone(),
                volume: volume.check()?,
                applied: false,
            };
            let said = format!("source of {name}: PVC {pvc}, {}", source.place);
            relationship.set_source(source)?;
            store.save(&relationship)?;
            println!("{said}");
        }
        ReplicationCommand::Schedule {
            name,
            cronspec,
            wait,
        } => {
            let cronspec = args::cronspec(cronspec)?;
            let mut relationship = store.load(name, Kind::Replication)?;
            let clusters = Clusters::connect(&kubeconfig()?, &relationship).await?;
            relationship.schedule = Some(cronspec.clone());
            replication::apply(
                &mut relationship,
                store,
                &clusters,
                &Trigger::Schedule(cronspec.clone()),
                Duration::from_secs(wait.endpoint_timeout),
            )
            .await?;
            println!("{name} replicates on schedule {cronspec:?} (UTC)");
        }
        ReplicationCommand::Sync { name, wait } => {
            let mut relationship = store.load(name, Kind::Replication)?;
            let clusters = Clusters::connect(&kubeconfig()?, &relationship).await?;
            let manual = migration::now();
            relationship.schedule = None;
            let applied = replication::apply(
                &mut relationship,
                store,
                &clusters,
                &Trigger::Manual(manual.clone()),
                Duration::from_secs(wait.endpoint_timeout),
            )
            .await?;
            let bar = Bar::new();
            let done = replication::wait_for_sync(
                &relationship,
                &clusters,
                &manual,
                &applied,
                wait.timeout.map(Duration::from_secs),
                &bar,
            )
            .await;
            bar.0.finish_and_clear();
            println!("synchronized {name}: {}", outcome(&done?));
        }
        ReplicationCommand::Status { name } => {
            let relationship = store.load(name, Kind::Replication)?;
            status(&relationship, &kubeconfig()?).await?;
        }
        ReplicationCommand::Delete { name } => {
            let relationship = store.load(name, Kind::Replication)?;
            for line in replication::delete(&relationship, &kubeconfig()?).await? {
                println!("deleted {line}");
            }
            store.remove(name)?;
            println!("deleted replication {name}");
        }
    }
    Ok(())
}

async fn migration(
    command: &MigrationCommand,
    store: &Store,
    kubeconfig: impl Fn() -> Result<kube::config::Kubeconfig, Error>,
) -> Result<(), Error> {
    match command {
        MigrationCommand::Create {
            name,
            place,
            pvc,
            capacity,
            volume,
        } => {
            let mut relationship = Relationship::new(Kind::Migration, name)?;
            relationship.set_destination(Destination {
                place: place.resolve(&kubeconfig()?, name)?,
                pvc: Some(pvc.clone()),
                capacity: capacity.as_deref().map(args::capacity).transpose()?,
                volume: volume.check()?,
                service_type: None,
                applied: false,
            })?;
            store.create(&relationship)?;
            let made = match migration::create(&mut relationship, store, &kubeconfig()?).await {
                Ok(made) => made,
                Err(e) => {
                    // Nothing applied: nothing of the migration is left,
                    // and the same command can run again.
                    if !relationship.destination().is_ok_and(|d| d.applied) {
                        store.remove(name)?;
                    }
                    return Err(e);
                }
            };
            println!("{made}; next: kubectl wasmover migration rsync {name} --source DIR");
        }
        MigrationCommand::Rsync {
            name,
            source,
            timeout,
        } => {
            let relationship = store.load(name, Kind::Migration)?;
            let cache = wasmover_operator::dirs::cache_home().map(|d| d.join("precompiled"));
            let synced = migration::rsync(
                &relationship,
                &kubeconfig()?,
                source,
                cache,
                Duration::from_secs(*timeout),
            )
            .await?;
            let r = &synced.report;
            println!(
                "sent {} to {name}: {} entries ({} files rebuilt, {} removed), {} of files, {} on the wire; {}",
                source.display(),
                r.entries_total,
                r.files_transferred,
                r.entries_deleted,
                HumanBytes(r.bytes_total),
                HumanBytes(r.bytes_on_wire),
                verdict(&synced.status),
            );
        }
        MigrationCommand::Delete { name } => {
            let relationship = store.load(name, Kind::Migration)?;
            for line in migration::delete(&relationship, &kubeconfig()?).await? {
                println!("deleted {line}");
            }
            store.remove(name)?;
            println!("deleted migration {name}; the PVC stays");
        }
    }
    Ok(())
}

impl PlaceArgs {
    /// The place, with the context and namespace resolved now, so that
    /// switching contexts later does not move the relationship.
    fn resolve(&self, config: &kube::config::Kubeconfig, name: &str) -> Result<Place, Error> {
        let (context, default_namespace) = contexts::resolve(config, self.context.as_deref())?;
        let namespace = self.namespace.clone().unwrap_or(default_namespace);
        let object = self.object_name.clone().unwrap_or_else(|| name.to_owned());
        wasmover_operator::kubectl::relationship::check_name("namespace", &namespace)?;
        wasmover_operator::kubectl::relationship::check_name("object", &object)?;
        Ok(Place {
            context,
            namespace,
            name: object,
        })
    }
}

/// The sync's progress bar on stderr (hidden when it is not a terminal):
/// the source's bytes and files as its status reports them.
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }
}

impl replication::Progress for Bar {
    fn update(&self, status: &SyncStatus) {
        if let (Some(done), Some(total)) = (status.bytes_transferred, status.bytes_total) {
            self.0.set_length(total);
            self.0.set_position(done.min(total));
        }
        let message = match (status.files_transferred, status.files_to_transfer) {
            (Some(done), Some(all)) => format!("{done}/{all} files"),
            _ => replication::condition_text(status),
        };
        self.0.set_message(message);
    }
}

/// A completed synchronization in one line.
fn outcome(status: &SyncStatus) -> String {
    format!(
        "{} moved of {}, {} files rebuilt, in {}; {}",
        HumanBytes(status.bytes_transferred.unwrap_or_default()),
        HumanBytes(status.bytes_total.unwrap_or_default()),
        status.files_transferred.unwrap_or_default(),
        status.last_sync_duration.as_deref().unwrap_or("?"),
        verdict(status)
    )
}

/// Whether the destination was verified.
fn verdict(status: &SyncStatus) -> String {
    match (status.last_sync_verified, &status.last_sync_digest) {
        (Some(true), Some(digest)) => format!("verified: tree digest {digest}"),
        (_, Some(digest)) => format!("NOT verified: tree digest {digest}"),
        _ => "not verified (no tree digest reported)".into(),
    }
}

/// Prints both sides' state.
async fn status(
    relationship: &Relationship,
    config: &kube::config::Kubeconfig,
) -> Result<(), Error> {
    use wasmover_operator::controller::Replication;
    use wasmover_operator::crd::{ReplicationDestination, ReplicationSource};
    println!(
        "replication {} ({})",
        relationship.name,
        relationship
            .schedule
            .as_deref()
            .map_or("manual: `sync`".to_owned(), |s| format!("schedule {s:?}"))
    );
    if let Some(d) = &relationship.destination {
        let found = match d.applied {
            true => contexts::Cluster::connect(config, Some(&d.place.context))
                .await?
                .api::<ReplicationDestination>(&d.place.namespace)
                .get_opt(&d.place.name)
                .await?
                .map(|rd| {
                    let endpoint = rd.status.as_ref().and_then(|s| s.endpoint.clone());
                    let mut lines = side_lines(&rd.sync_status());
                    if let Some(e) = endpoint {
                        lines.push(format!(
                            "endpoint: {}:{} (key Secret {})",
                            e.address.as_deref().unwrap_or("?"),
                            e.port.map_or("?".into(), |p| p.to_string()),
                            e.key_secret.as_deref().unwrap_or("?"),
                        ));
                    }
                    lines
                }),
            false => None,
        };
        print_side("destination", &d.place, d.applied, found);
    }
    if let Some(s) = &relationship.source {
        let found = match s.applied {
            true => contexts::Cluster::connect(config, Some(&s.place.context))
                .await?
                .api::<ReplicationSource>(&s.place.namespace)
                .get_opt(&s.place.name)
                .await?
                .map(|rs| side_lines(&rs.sync_status())),
            false => None,
        };
        print_side("source", &s.place, s.applied, found);
    }
    Ok(())
}

fn print_side(side: &str, place: &Place, applied: bool, lines: Option<Vec<String>>) {
    println!("{side}: {place}");
    match (applied, lines) {
        (false, _) => println!("  not created yet: `sync` or `schedule` creates it"),
        (true, None) => println!("  missing: deleted outside the plugin?"),
        (true, Some(lines)) => lines.iter().for_each(|l| println!("  {l}")),
    }
}

fn side_lines(status: &SyncStatus) -> Vec<String> {
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map_or("never".to_owned(), |t| t.0.to_string())
    };
    let mut lines = vec![
        format!("synchronizing: {}", replication::condition_text(status)),
        format!(
            "last sync: {} (took {})",
            time(&status.last_sync_time),
            status.last_sync_duration.as_deref().unwrap_or("-")
        ),
    ];
    if status.next_sync_time.is_some() {
        lines.push(format!("next sync: {}", time(&status.next_sync_time)));
    }
    if status.bytes_total.is_some() {
        lines.push(format!(
            "moved: {} of {}, {} of {} files",
            HumanBytes(status.bytes_transferred.unwrap_or_default()),
            HumanBytes(status.bytes_total.unwrap_or_default()),
            status.files_transferred.unwrap_or_default(),
            status.files_to_transfer.unwrap_or_default(),
        ));
    }
    if status.last_sync_digest.is_some() {
        lines.push(verdict(status));
    }
    lines
}
