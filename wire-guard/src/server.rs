//! The proxy's shared state, its listeners, and the run loop with graceful shutdown.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use kafka_protocol::protocol::StrBytes;
use shared::policy::PolicyStore;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    brokers::{PortMap, Routes},
    config::Config,
    connection::{self, ConnInfo},
    dlq::DeadLetters,
    error::Error,
    limits::{Admission, Budget},
    metrics::Metrics,
    rewrite::AddressBook,
    schema::Schemas,
    stage::{data_quality::DataQuality, sequences::Sequences},
    upstream::{BoxStream, Connector},
};

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which upstream a listener leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The bootstrap listener: any configured upstream bootstrap server.
    Bootstrap,
    /// A broker listener: the broker with this node id.
    Node(i32),
}

/// State shared by every listener and connection of one proxy.
pub struct Server {
    pub config: Config,
    pub metrics: Metrics,
    pub connector: Connector,
    pub routes: Routes,
    port_map: PortMap,
    /// Broker listeners bind the bootstrap listener's address.
    bind_ip: IpAddr,
    advertised_host: StrBytes,
    acceptor: Option<TlsAcceptor>,
    /// Nodes whose broker listener is open.
    listening: Mutex<HashSet<i32>>,
    /// Cancelled when shutdown starts: stop accepting and reading requests.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain deadline passes: close what is left.
    pub force: CancellationToken,
    tracker: TaskTracker,
    next_conn_id: AtomicU64,
    /// Connection caps, checked as each connection is accepted.
    admission: Admission,
    /// Bytes of whole frames held in memory across all connections.
    pub budget: Budget,
    /// The policy in force, reloaded when the policy directory changes.
    pub policy: Option<Arc<PolicyStore>>,
    /// The data-quality stage, present when a schema registry is configured.
    pub data_quality: Option<DataQuality>,
    /// Topic names by id, for Fetch versions that name topics only by id.
    pub topic_ids: crate::topic_ids::TopicIds,
}

impl AddressBook for Arc<Server> {
    fn translate(&self, node: i32, host: &str, port: i32) -> Result<(StrBytes, i32), Error> {
        let proxy_port = self.port_map.port_for(node)?;
        if self.routes.record(node, host, port) {
            tracing::info!(node, upstream = %format!("{host}:{port}"), proxy_port, "broker route learnt");
        }
        self.ensure_broker_listener(node, proxy_port)?;
        Ok((self.advertised_host.clone(), i32::from(proxy_port)))
    }
}

impl Server {
    /// Opens the listener for `node` before its address is handed to any client.
    fn ensure_broker_listener(self: &Arc<Self>, node: i32, port: u16) -> Result<(), Error> {
        let mut listening = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        if listening.contains(&node) {
            return Ok(());
        }
        let addr = SocketAddr::new(self.bind_ip, port);
        let bind_error = |e: std::io::Error| Error::PortMapping {
            node,
            reason: format!("cannot listen on {addr}: {e}"),
        };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind_error)?;
        tracing::info!(node, listen = %addr, "broker listener open");
        listening.insert(node);
        self.tracker
            .spawn(accept_loop(self.clone(), listener, Target::Node(node)));
        Ok(())
    }

    fn label(target: Target) -> &'static str {
        match target {
            Target::Bootstrap => "bootstrap",
            Target::Node(_) => "broker",
        }
    }
}

async fn accept_loop(server: Arc<Server>, listener: TcpListener, target: Target) {
    loop {
        let accepted = tokio::select! {
            () = server.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually descriptor exhaustion: back off rather than spin.
                tracing::error!(error = %e, ?target, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admitted = match server.admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                // Closed at once: a flood of connections costs a descriptor for a moment only.
                server
                    .metrics
                    .connections_refused
                    .with_label_values(&[refusal.label()])
                    .inc();
                tracing::debug!(%peer, limit = refusal.label(), "connection refused");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        server
            .metrics
            .connections_total
            .with_label_values(&[Server::label(target)])
            .inc();
        let info = ConnInfo {
            id: server.next_conn_id.fetch_add(1, Ordering::Relaxed),
            peer,
            target,
        };
        let conn_server = server.clone();
        server.tracker.spawn(async move {
            let _admitted = admitted;
            let (client, principal): (BoxStream, _) = match &conn_server.acceptor {
                None => (Box::new(tcp), None),
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let principal =
                                certificate_principal(tls.get_ref().1.peer_certificates());
                            (Box::new(tls), principal)
                        }
                        Ok(Err(e)) => return tls_failed(&conn_server, info, &Error::ClientTls(e)),
                        Err(_) => {
                            let e = std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "handshake timed out",
                            );
                            return tls_failed(&conn_server, info, &Error::ClientTls(e));
                        }
                    }
                }
            };
            connection::serve(conn_server, client, info, principal).await;
        });
    }
}

/// How often the policy directory is checked for changes.
const POLICY_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How often `/readyz` re-checks that an upstream broker accepts connections.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps `/readyz` true only while some upstream bootstrap server accepts a connection (and its
/// TLS handshake, when configured): a proxy that cannot reach the cluster should be taken out of
/// a load balancer rather than hand clients a connection that fails.
async fn readiness_probe(server: Arc<Server>, readiness: shared::telemetry::Readiness) {
    loop {
        let reachable = server
            .connector
            .connect_any(&server.config.upstreams)
            .await
            .is_ok();
        if reachable != readiness.is_ready() {
            tracing::info!(ready = reachable, "upstream reachability changed");
        }
        readiness.set(reachable);
        tokio::time::sleep(READINESS_INTERVAL).await;
    }
}

/// The principal of a client that presented a certificate (mutual TLS): `User:` and the
/// certificate's subject, as Kafka names SSL principals.
fn certificate_principal(
    chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Option<String> {
    let leaf = chain?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(format!("User:{}", cert.subject()))
}

fn tls_failed(server: &Server, info: ConnInfo, e: &Error) {
    server
        .metrics
        .connection_errors
        .with_label_values(&["client", "tls"])
        .inc();
    tracing::warn!(conn = info.id, peer = %info.peer, error = %e, "closing connection");
}

/// Serves clients on `listener` (the bootstrap listener) until `shutdown` is cancelled, then
/// drains in-flight requests for up to `config.drain_timeout` and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("bootstrap listener has no address: {e}")))?;
    let base = match config.broker_port_base {
        Some(base) => base,
        None => local.port().checked_add(1).ok_or_else(|| {
            Error::Config("bootstrap port 65535 leaves no room for broker ports".into())
        })?,
    };
    let policy = match &config.policies {
        Some(dir) => {
            let store = PolicyStore::load(dir)?;
            let set = store.current();
            tracing::info!(dir = %dir.display(), files = set.files.len(), topic_rules = set.topics.rules.len(), "policies loaded");
            if !set.topics.is_empty() && config.schema_registry.is_none() {
                return Err(Error::Config(
                    "the policies have topics: rules, which check records against a schema registry; pass --schema-registry-url".into(),
                ));
            }
            Some(Arc::new(store))
        }
        None => None,
    };
    let acceptor = match &config.client_tls {
        Some(t) => Some(TlsAcceptor::from(shared::tls::server_config(
            &t.cert,
            &t.key,
            t.client_ca.as_deref(),
        )?)),
        None => None,
    };
    let upstream_tls = match &config.upstream_tls {
        Some(t) => Some(shared::tls::client_config(
            &t.ca,
            t.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )?),
        None => None,
    };
    let metrics = Metrics::new().map_err(|e| Error::Config(format!("metrics: {e}")))?;
    let readiness = shared::telemetry::Readiness::default();
    let admin = match config.admin_listen {
        Some(addr) => {
            let admin_listener = TcpListener::bind(addr).await.map_err(|e| {
                Error::Config(format!("cannot listen on admin address {addr}: {e}"))
            })?;
            let registry = metrics.registry.clone();
            let ready = readiness.clone();
            let stop = CancellationToken::new();
            let admin_stop = stop.clone();
            let task = tokio::spawn(async move {
                if let Err(e) =
                    shared::telemetry::serve_admin(admin_listener, registry, ready, admin_stop)
                        .await
                {
                    tracing::error!(error = %e, "admin endpoint stopped");
                }
            });
            Some((stop, task))
        }
        None => None,
    };
    let admission = Admission::new(&config.limits);
    let budget = Budget::new(
        config.limits.buffer_budget_bytes,
        metrics.buffered_bytes.clone(),
    );
    let connector = Connector::new(upstream_tls, config.connect_timeout);
    let kms = match &config.kms {
        Some(kms_config) => Some(
            crate::kms::build(kms_config, &metrics.registry)
                .await
                .map_err(|e| Error::Config(format!("kms: {e}")))?,
        ),
        None => None,
    };
    let data_quality = match &config.schema_registry {
        Some(registry) => Some(DataQuality {
            schemas: Schemas::new(registry.clone(), &metrics.registry)
                .map_err(|e| Error::Config(format!("schema registry: {e}")))?,
            protection: crate::protect::Protection {
                kms,
                max_decompressed: config.max_decompressed_bytes,
                max_batch_bytes: config.max_batch_bytes,
            },
            dead_letters: DeadLetters::new(
                connector.clone(),
                config.upstreams.clone(),
                config.dead_letter_login.clone(),
                config.dead_letter_timeout,
            ),
            sequences: Sequences::default(),
            max_decompressed: config.max_decompressed_bytes,
        }),
        None => None,
    };
    if let Some(store) = &policy {
        let problems = crate::protect::check_policy(
            &store.current().topics,
            config.kms.as_ref(),
            data_quality.as_ref().map(|d| &d.schemas),
        )
        .await;
        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "field protection cannot work as the policies say:\n  {}",
                problems.join("\n  ")
            )));
        }
        store
            .clone()
            .spawn_poller(POLICY_POLL_INTERVAL, shutdown.clone());
    }
    let server = Arc::new(Server {
        connector,
        policy,
        data_quality,
        topic_ids: Default::default(),
        advertised_host: StrBytes::from_string(config.advertised_host.clone()),
        port_map: PortMap { base },
        bind_ip: local.ip(),
        acceptor,
        metrics,
        routes: Routes::default(),
        listening: Mutex::default(),
        shutdown: shutdown.clone(),
        force: CancellationToken::new(),
        tracker: TaskTracker::new(),
        next_conn_id: AtomicU64::new(1),
        admission,
        budget,
        config,
    });
    tracing::info!(
        bootstrap = %local,
        upstream = ?server.config.upstreams,
        broker_port_base = base,
        advertised_host = %server.config.advertised_host,
        tls = server.acceptor.is_some(),
        "wire-guard listening"
    );
    server
        .tracker
        .spawn(crate::discovery::open_broker_listeners(server.clone()));
    let probe = tokio::spawn(readiness_probe(server.clone(), readiness.clone()));

    accept_loop(server.clone(), listener, Target::Bootstrap).await;

    probe.abort();
    readiness.set(false);
    server.tracker.close();
    tracing::info!(drain_timeout = ?server.config.drain_timeout, "shutting down: draining in-flight requests");
    if tokio::time::timeout(server.config.drain_timeout, server.tracker.wait())
        .await
        .is_err()
    {
        server.force.cancel();
        server.tracker.wait().await;
    }
    if let Some((stop, task)) = admin {
        stop.cancel();
        let _ = task.await;
    }
    tracing::info!("wire-guard stopped");
    Ok(())
}
