//! A minimal raw Kafka client for protocol-level tests: send any request, read responses in
//! order, or send bytes no real client would.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable, StrBytes},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            stream: TcpStream::connect(addr).await?,
        })
    }

    /// Encodes and sends one request without waiting for its response.
    pub async fn send<M: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &M,
    ) -> anyhow::Result<()> {
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_static_str("raw-test-client"));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, key.request_header_version(version))?;
        body.encode(&mut buf, version)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    /// Reads one response frame; returns its correlation id and the bytes after the header.
    pub async fn recv(&mut self, key: ApiKey, version: i16) -> anyhow::Result<(i32, Bytes)> {
        let len = self.stream.read_i32().await?;
        let mut buf = vec![0u8; usize::try_from(len)?];
        self.stream.read_exact(&mut buf).await?;
        let mut bytes = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut bytes, key.response_header_version(version))?;
        Ok((header.correlation_id, bytes))
    }

    /// Sends a request and decodes its response.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> anyhow::Result<Resp> {
        self.send(key, version, 1, body).await?;
        let (correlation_id, mut bytes) = self.recv(key, version).await?;
        anyhow::ensure!(correlation_id == 1, "correlation id {correlation_id}");
        let resp = Resp::decode(&mut bytes, version)?;
        anyhow::ensure!(
            !bytes.has_remaining(),
            "{} trailing bytes",
            bytes.remaining()
        );
        Ok(resp)
    }

    /// True once the peer has closed the connection (reads return end of stream or reset).
    pub async fn closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(
            std::time::Duration::from_secs(20),
            self.stream.read(&mut byte),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}
