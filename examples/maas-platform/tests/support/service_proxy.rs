//! A TCP proxy that behaves like a Kubernetes Service (kube-proxy): each new connection goes
//! to the next ready endpoint and stays with it; an endpoint joins once its `/health/ready`
//! answers 200, and leaves only `propagation` after it stopped answering 200 — the delay with
//! which a terminating pod's removal reaches every node.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
struct Endpoint {
    addr: SocketAddr,
    /// In rotation.
    serving: bool,
    /// Since when its readiness has failed.
    failing_since: Option<Instant>,
}

/// The running proxy; stops when dropped.
pub struct ServiceProxy {
    pub addr: SocketAddr,
    endpoints: Arc<Mutex<Vec<Endpoint>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Connections that found no endpoint in rotation.
    pub refused: Arc<AtomicUsize>,
}

impl ServiceProxy {
    pub async fn start(propagation: Duration) -> ServiceProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints: Arc<Mutex<Vec<Endpoint>>> = Arc::default();
        let refused = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (endpoints, refused) = (endpoints.clone(), refused.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let serving: Vec<SocketAddr> = endpoints
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|e| e.serving)
                        .map(|e| e.addr)
                        .collect();
                    if serving.is_empty() {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue; // dropped: the client sees the connection close
                    }
                    let backend = serving[next.fetch_add(1, Ordering::Relaxed) % serving.len()];
                    tokio::spawn(async move {
                        if let Ok(mut upstream) = TcpStream::connect(backend).await {
                            let _ = client.set_nodelay(true);
                            let _ = upstream.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    });
                }
            })
        };
        let watch = {
            let endpoints = endpoints.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_millis(500))
                    .build()
                    .unwrap();
                loop {
                    let known: Vec<SocketAddr> =
                        endpoints.lock().unwrap().iter().map(|e| e.addr).collect();
                    for addr in known {
                        let ready = http
                            .get(format!("http://{addr}/health/ready"))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200);
                        let mut list = endpoints.lock().unwrap();
                        let Some(e) = list.iter_mut().find(|e| e.addr == addr) else {
                            continue;
                        };
                        if ready {
                            e.serving = true;
                            e.failing_since = None;
                        } else {
                            let since = *e.failing_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= propagation {
                                e.serving = false;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        ServiceProxy {
            addr,
            endpoints,
            tasks: vec![accept, watch],
            refused,
        }
    }

    /// Watches `addr`: it serves once ready.
    pub fn add(&self, addr: SocketAddr) {
        self.endpoints.lock().unwrap().push(Endpoint {
            addr,
            serving: false,
            failing_since: None,
        });
    }

    /// Forgets `addr` (its pod is gone).
    pub fn remove(&self, addr: SocketAddr) {
        self.endpoints.lock().unwrap().retain(|e| e.addr != addr);
    }

    /// Whether `addr` is in rotation.
    pub fn serving(&self, addr: SocketAddr) -> bool {
        self.endpoints
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.addr == addr && e.serving)
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
