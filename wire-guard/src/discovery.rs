//! Opening broker listeners at startup.
//!
//! Clients cache broker addresses. After a proxy restart they reconnect straight to a broker
//! port, which would be closed until some client fetched metadata through the bootstrap port.
//! So at startup the proxy asks the cluster for its brokers once and opens their listeners.
//! A cluster that requires authentication before Metadata refuses this; the listeners then
//! open as brokers appear in rewritten responses, as they would anyway.

use std::{sync::Arc, time::Duration};

use bytes::Buf;
use kafka_protocol::{
    messages::{ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable, StrBytes},
};
use tokio::io::AsyncWriteExt;

use crate::{
    error::{Error, Side},
    frame, rewrite,
    server::Server,
};

/// Metadata v4 is understood by every broker since Kafka 1.0 and lets us ask for no topics.
const METADATA_VERSION: i16 = 4;
const ATTEMPTS: u32 = 3;

/// Asks the upstream cluster for its brokers and opens a listener for each.
pub async fn open_broker_listeners(server: Arc<Server>) {
    for attempt in 1..=ATTEMPTS {
        let outcome = tokio::select! {
            () = server.shutdown.cancelled() => return,
            outcome = discover(&server) => outcome,
        };
        match outcome {
            Ok(count) => {
                tracing::info!(
                    brokers = count,
                    "broker listeners opened from cluster metadata"
                );
                return;
            }
            Err(e) if attempt == ATTEMPTS => {
                tracing::info!(error = %e, "broker discovery gave up; listeners open as clients fetch metadata");
            }
            Err(e) => {
                tracing::debug!(error = %e, attempt, "broker discovery failed, retrying");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
    }
}

async fn discover(server: &Arc<Server>) -> Result<usize, Error> {
    let mut upstream = server
        .connector
        .connect_any(&server.config.upstreams)
        .await?;
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Metadata as i16;
    header.request_api_version = METADATA_VERSION;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("wire-guard-discovery"));
    let mut request = MetadataRequest::default();
    request.topics = Some(Vec::new());
    let request = frame::build(64, |buf| {
        header.encode(
            buf,
            ApiKey::Metadata.request_header_version(METADATA_VERSION),
        )?;
        request.encode(buf, METADATA_VERSION)
    })
    .map_err(|e| Error::Config(format!("cannot encode Metadata: {e}")))?;
    upstream
        .write_all(request.wire())
        .await
        .map_err(Error::io(Side::Upstream))?;
    upstream.flush().await.map_err(Error::io(Side::Upstream))?;

    let frame = tokio::time::timeout(
        server.config.connect_timeout,
        frame::read(&mut upstream, server.config.max_frame_bytes, Side::Upstream),
    )
    .await
    .map_err(|_| Error::UpstreamClosed)??
    .ok_or(Error::UpstreamClosed)?;
    let mut payload = frame.payload();
    let malformed = |e: anyhow::Error| Error::Malformed {
        side: Side::Upstream,
        api: ApiKey::Metadata,
        version: METADATA_VERSION,
        reason: e.to_string(),
    };
    ResponseHeader::decode(
        &mut payload,
        ApiKey::Metadata.response_header_version(METADATA_VERSION),
    )
    .map_err(malformed)?;
    let mut response =
        MetadataResponse::decode(&mut payload, METADATA_VERSION).map_err(malformed)?;
    if payload.has_remaining() {
        tracing::debug!(
            bytes = payload.remaining(),
            "trailing bytes after Metadata response"
        );
    }
    rewrite::metadata(&mut response, server)?;
    Ok(response.brokers.len())
}
