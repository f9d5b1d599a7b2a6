//! Connections to PostgreSQL: pools that replace a connection the server closed (so a
//! database restart heals on its own), and TLS when `MAAS_DATABASE_URL` says
//! `sslmode=require`.
//!
//! TLS is rustls with the system's certificate authorities plus `MAAS_DATABASE_CA`; the
//! server's certificate and host name are always verified — there is no mode that encrypts
//! without knowing whom it talks to. Without `sslmode=require` the connection is plain TCP
//! (`prefer`, libpq's default, is treated as plain: a certificate nobody can verify is not
//! tried).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use maas_queue::outbox::pg::PgRelayBuilder;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::BoxError;

/// How long opening a connection may take: while the database is unreachable, a request
/// that needs it fails (503) within this instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for a free connection of a busy pool.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the platform's database is, and how to talk to it.
#[derive(Clone)]
pub(crate) struct Database {
    conninfo: String,
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Database {
    /// Reads `url` (libpq style) and, when it asks for TLS, the certificate authorities.
    pub(crate) fn new(url: &str, ca: Option<&Path>) -> Result<Database, BoxError> {
        // The parse error names the bad option, never the value (which may be a password).
        let config: tokio_postgres::Config = url.parse()?;
        let tls = match (config.get_ssl_mode(), ca) {
            (SslMode::Require, ca) => Some(MakeRustlsConnect::new(client_config(ca)?)),
            (_, Some(_)) => {
                return Err(
                    "MAAS_DATABASE_CA is set but MAAS_DATABASE_URL does not ask for TLS \
                     (add sslmode=require)"
                        .into(),
                );
            }
            (_, None) => None,
        };
        Ok(Database {
            conninfo: url.to_owned(),
            config,
            tls,
        })
    }

    /// The connection string, for the outbox relay.
    pub(crate) fn conninfo(&self) -> &str {
        &self.conninfo
    }

    /// A pool of at most `size` connections. A connection is checked as it is handed out; one
    /// the server closed is dropped and a new one opened.
    pub(crate) fn pool(&self, size: usize) -> Result<Pool, BoxError> {
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Some(tls) => Manager::from_config(self.config.clone(), tls.clone(), recycling),
            None => Manager::from_config(self.config.clone(), NoTls, recycling),
        };
        Ok(Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(WAIT_TIMEOUT))
            .build()?)
    }

    /// `relay` with this database's TLS, if any.
    pub(crate) fn relay(&self, relay: PgRelayBuilder) -> PgRelayBuilder {
        match &self.tls {
            Some(tls) => relay.tls(tls.clone()),
            None => relay,
        }
    }
}

/// rustls with ring, the system's roots and the `ca` file's.
fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: MAAS_DATABASE_CA may be all there is.
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let mut from_file = 0;
    if let Some(path) = ca {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("MAAS_DATABASE_CA {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("MAAS_DATABASE_CA {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("MAAS_DATABASE_CA {}: {e}", path.display()))?;
            from_file += 1;
        }
        if from_file == 0 {
            return Err(format!("MAAS_DATABASE_CA {} holds no certificate", path.display()).into());
        }
    }
    if added + from_file == 0 {
        return Err(
            "sslmode=require, but there is no certificate authority to verify the \
             server with: set MAAS_DATABASE_CA to a PEM file"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
