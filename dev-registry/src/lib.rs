//! An in-memory, Confluent-compatible schema registry for tests and the demo.
//!
//! No Confluent-compatible registry installs from the package registries the project builds
//! from, so this one stands in for Confluent Schema Registry and Karapace. It implements the
//! parts of the Confluent REST API that clients and registry-proxy's endpoint map exercise:
//!
//! - [`store`]: subjects, versions and globally unique schema ids (identical schema text,
//!   references, `metadata` and `ruleSet` reuse an id; the last two are kept and returned
//!   with the schema, as Confluent 7.4+ and Karapace do, for data-contract rules), soft and
//!   permanent deletes, config and mode, contexts (subjects named `:.ctx:name`).
//! - [`api`]: the axum routes and the Confluent error shape (`{"error_code": 40401, ...}`).
//!   Where registry-proxy must pass the registry's own answers through, it answers as Confluent
//!   and Karapace do: one trailing `/` is the path without it, a body that is not JSON is 400
//!   `400`, an unknown field in a schema body 422 `422`, and an endpoint it lacks (associations,
//!   DEK registry, exporters) 404 `{"error_code": 404, "message": "HTTP 404 Not Found"}`.
//!
//! It keeps nothing on disk, checks no compatibility (every check answers `is_compatible:
//! true`) and validates schemas only as far as "is it JSON" (Avro, JSON Schema) or "is it
//! non-empty" (Protobuf). It is not for production.

pub mod api;
pub mod store;

use std::{future::Future, time::Duration};

use tokio::net::TcpListener;

/// Serves the registry on `listener` until `shutdown` resolves (pass a
/// `CancellationToken::cancelled_owned()` or a ctrl-c future).
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, Duration::ZERO, shutdown).await
}

/// [`run`], answering every request `delay` late: benchmarks use it to stand in for a registry
/// a network hop away, since this one answers from memory in microseconds.
pub async fn run_with(
    listener: TcpListener,
    delay: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = api::router(store::Store::default());
    if !delay.is_zero() {
        app = app.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                tokio::time::sleep(delay).await;
                next.run(req).await
            },
        ));
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
