//! One connection to one broker: pipelined requests matched to answers by correlation id.
//!
//! The socket has `TCP_NODELAY` set and every request is written as a single buffer (size
//! prefix and body together), so a small request is never held back waiting for the
//! broker's delayed ACK — the stall that makes rskafka's small produce requests take ~40 ms.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, oneshot};

use crate::QueueError;

type Pending = Arc<std::sync::Mutex<HashMap<i32, oneshot::Sender<Result<Bytes, QueueError>>>>>;

/// A connection to one broker.
#[derive(Debug)]
pub(crate) struct Connection {
    addr: String,
    writer: Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicI32,
    closed: Arc<AtomicBool>,
    client_id: StrBytes,
    timeout: Duration,
}

fn protocol(e: impl std::fmt::Display) -> QueueError {
    QueueError::Protocol(e.to_string())
}

fn conn_err(addr: &str, reason: impl std::fmt::Display) -> QueueError {
    QueueError::Connection {
        broker: addr.to_owned(),
        reason: reason.to_string(),
    }
}

impl Connection {
    /// Connects within `timeout`; requests time out after `timeout` too.
    pub(crate) async fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Arc<Self>, QueueError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| conn_err(addr, format!("connect timed out after {timeout:?}")))?
            .map_err(|e| conn_err(addr, e))?;
        stream.set_nodelay(true).map_err(|e| conn_err(addr, e))?;
        let (mut reader, writer) = stream.into_split();
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (p, c, a) = (pending.clone(), closed.clone(), addr.to_owned());
        tokio::spawn(async move {
            let failure = loop {
                let size = match reader.read_i32().await {
                    Ok(n) if n >= 4 => n as usize,
                    Ok(n) => break format!("bad frame size {n}"),
                    Err(e) => break e.to_string(),
                };
                let mut frame = vec![0u8; size];
                if let Err(e) = reader.read_exact(&mut frame).await {
                    break e.to_string();
                }
                let mut frame = Bytes::from(frame);
                let id = frame.get_i32();
                let waiter = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(Ok(frame));
                }
            };
            c.store(true, Ordering::Release);
            let waiters: Vec<_> = p
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .collect();
            for (_, w) in waiters {
                let _ = w.send(Err(conn_err(&a, format!("connection closed: {failure}"))));
            }
        });
        Ok(Arc::new(Connection {
            addr: addr.to_owned(),
            writer: Mutex::new(writer),
            pending,
            next_id: AtomicI32::new(1),
            closed,
            client_id: StrBytes::from_string(client_id.to_owned()),
            timeout,
        }))
    }

    /// Whether the connection broke (a new one is needed).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `request` at `version` and waits for its answer.
    pub(crate) async fn send<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, QueueError> {
        if self.is_closed() {
            return Err(conn_err(&self.addr, "connection closed"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = id;
        header.client_id = Some(self.client_id.clone());
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0); // size, filled below
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(protocol)?;
        request.encode(&mut buf, version).map_err(protocol)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());

        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = w.write_all(&buf).await {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                self.closed.store(true, Ordering::Release);
                return Err(conn_err(&self.addr, e));
            }
        }
        let mut body = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(conn_err(&self.addr, "connection closed")),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                return Err(QueueError::Timeout(self.timeout));
            }
        };
        // The correlation id was consumed by the reader; the rest of the header follows.
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        if header_version >= 1 {
            // Flexible response header: tagged fields after the correlation id.
            let mut with_id = BytesMut::with_capacity(body.len() + 4);
            with_id.put_i32(id);
            with_id.put(body);
            let mut b = with_id.freeze();
            ResponseHeader::decode(&mut b, header_version).map_err(protocol)?;
            body = b;
        }
        R::Response::decode(&mut body, version).map_err(protocol)
    }
}
