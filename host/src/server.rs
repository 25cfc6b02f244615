//! The QUIC front door: accepts connections, reads one request frame per
//! bidirectional stream, hands it to the node, writes one response frame.
//!
//! Nothing a client sends can panic this loop: a bad frame is answered with a
//! `BadFrame` error on that stream and the connection keeps serving.

use crate::node::Node;
use kimberlite_client::protocol::{
    self, ErrorCode, FRAME_HEADER_BYTES, PROTOCOL_VERSION, RequestFrame, ResponseFrame, WireError,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A client must send its whole request within this time once it opened a stream.
pub const REQUEST_READ_TIMEOUT_MS: u64 = 30_000;

/// Connections served at once; more are refused until one closes.
pub const CONNECTIONS_MAX: usize = 1_024;

/// Bidirectional streams (requests in flight) per connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;

/// Serves `endpoint` until `shutdown` turns true, then closes every connection.
pub async fn serve(
    endpoint: quinn::Endpoint,
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = CONNECTIONS_MAX,
                "refusing a connection: too many open"
            );
            incoming.refuse();
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match incoming.await {
                Ok(connection) => serve_connection(connection, node).await,
                Err(error) => tracing::debug!(%error, "handshake failed"),
            }
        });
    }
    endpoint.close(0u32.into(), b"node shutting down");
}

/// After a request of a connection is refused over a tenant's quota, the connection's next
/// request is not read for this long: a client flooding past its quota waits (QUIC flow
/// control holds its next request) instead of costing the node a refusal per loop turn.
pub const QUOTA_PAUSE_MS: u64 = 100;

async fn serve_connection(connection: quinn::Connection, node: Arc<Node>) {
    let remote = connection.remote_address();
    tracing::debug!(%remote, "connection opened");
    // Milliseconds since `opened` until which the connection's next request waits.
    let opened = std::time::Instant::now();
    let paused_until_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let (send, receive) = match connection.accept_bi().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%remote, %error, "connection closed");
                return;
            }
        };
        // Accepted, then held: the client is already waiting for this answer.
        let now_ms = opened.elapsed().as_millis() as u64;
        let until_ms = paused_until_ms.load(std::sync::atomic::Ordering::Relaxed);
        if until_ms > now_ms {
            tokio::time::sleep(Duration::from_millis(until_ms - now_ms)).await;
        }
        let node = node.clone();
        let paused_until_ms = paused_until_ms.clone();
        tokio::spawn(async move {
            match serve_stream(send, receive, &node).await {
                Ok(Some(ErrorCode::QuotaExceeded)) => {
                    let until = opened.elapsed().as_millis() as u64 + QUOTA_PAUSE_MS;
                    paused_until_ms.fetch_max(until, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%remote, %error, "stream ended early"),
            }
        });
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut receive: quinn::RecvStream,
    node: &Node,
) -> Result<Option<ErrorCode>, String> {
    let read = tokio::time::timeout(
        Duration::from_millis(REQUEST_READ_TIMEOUT_MS),
        read_request(&mut receive),
    )
    .await
    .unwrap_or_else(|_| {
        Err(WireError {
            code: ErrorCode::BadFrame,
            message: format!("the request was not received within {REQUEST_READ_TIMEOUT_MS} ms"),
        })
    });
    let result = match read {
        Ok(frame) if frame.version != PROTOCOL_VERSION => Err(WireError {
            code: ErrorCode::BadVersion,
            message: format!(
                "protocol version {} is not supported; this node speaks version {PROTOCOL_VERSION}",
                frame.version
            ),
        }),
        Ok(frame) => node.handle(frame).await,
        Err(error) => Err(error),
    };
    let refused = result.as_ref().err().map(|error| error.code);
    let response = ResponseFrame {
        version: PROTOCOL_VERSION,
        result,
    };
    let bytes = match protocol::encode_frame(&response) {
        Ok(bytes) => bytes,
        Err(error) => protocol::encode_frame(&ResponseFrame {
            version: PROTOCOL_VERSION,
            result: Err(WireError {
                code: ErrorCode::TooLarge,
                message: format!(
                    "the response could not be sent ({error}); add a LIMIT or read less"
                ),
            }),
        })
        .expect("a short error always encodes"),
    };
    send.write_all(&bytes)
        .await
        .map_err(|error| error.to_string())?;
    send.finish().map_err(|error| error.to_string())?;
    // Wait for the peer to read everything before the stream is dropped.
    let _ = send.stopped().await;
    Ok(refused)
}

async fn read_request(receive: &mut quinn::RecvStream) -> Result<RequestFrame, WireError> {
    let bad_frame = |message: String| WireError {
        code: ErrorCode::BadFrame,
        message,
    };
    let mut header = [0u8; FRAME_HEADER_BYTES];
    receive
        .read_exact(&mut header)
        .await
        .map_err(|error| bad_frame(format!("cannot read the frame length: {error}")))?;
    let length =
        protocol::decode_frame_length(header).map_err(|error| bad_frame(error.to_string()))?;
    let mut body = vec![0u8; length];
    receive.read_exact(&mut body).await.map_err(|error| {
        bad_frame(format!(
            "cannot read a frame body of {length} bytes: {error}"
        ))
    })?;
    protocol::decode_body(&body, "request frame").map_err(|error| bad_frame(error.to_string()))
}
