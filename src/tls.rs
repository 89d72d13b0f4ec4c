//! TLS with rustls: each public domain's certificate, loaded into each config snapshot
//! (so SIGHUP swaps it with everything else) and served through a resolver that reads
//! the live snapshot; server configs for STARTTLS and Direct TLS (XEP-0368, ALPN
//! `xmpp-client` / `xmpp-server`); and the client config for TLS legs to backends.
//! rustls speaks TLS 1.2 and 1.3 only, which is what DESIGN.md §6 asks.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;

pub const ALPN_CLIENT: &[u8] = b"xmpp-client";
pub const ALPN_SERVER: &[u8] = b"xmpp-server";

/// aws-lc-rs, with its default key exchange order: X25519MLKEM768 (post-quantum
/// hybrid) first for clients that offer it, then X25519, P-256, P-384.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Load and check a certificate chain and its key; the error names the problem.
pub fn load_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in the file",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: no usable private key ({e})", files.key.display()))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map(Arc::new)
        .map_err(|e| format!("certificate and key do not belong together or are unusable: {e}"))
}

/// The names in `names` the certificate (its end entity) is not valid for: SAN
/// entries, wildcards included, as a peer checking it would read them.
pub fn not_covered<'n>(
    key: &CertifiedKey,
    names: impl IntoIterator<Item = &'n str>,
) -> Vec<&'n str> {
    let Some(Ok(cert)) = key.cert.first().map(webpki::EndEntityCert::try_from) else {
        return names.into_iter().collect();
    };
    names
        .into_iter()
        .filter(|n| {
            rustls::pki_types::ServerName::try_from(*n).map_or(true, |sn| {
                cert.verify_is_valid_for_subject_name(&sn).is_err()
            })
        })
        .collect()
}

/// Where the certificate comes from at handshake time, for the name the client asked
/// for (SNI) if any: the live snapshot's, so a reload that changes it applies to the
/// next handshake.
pub type CertSource = Arc<dyn Fn(Option<&str>) -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// Serves the certificate its source gives at handshake time.
struct LiveCert(CertSource);

impl std::fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveCert")
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // The public domain the client names (or one of its service domains);
        // without SNI, or for a name dealer does not serve, the first domain's.
        (self.0)(hello.server_name())
    }
}

/// Server configs built once; the certificate inside them follows reloads.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// For STARTTLS (no ALPN: the protocol is already agreed).
    pub starttls: Arc<rustls::ServerConfig>,
    /// For Direct TLS c2s listeners: ALPN `xmpp-client`.
    pub direct_client: Arc<rustls::ServerConfig>,
    /// For Direct TLS s2s listeners: ALPN `xmpp-server`.
    pub direct_server: Arc<rustls::ServerConfig>,
    /// For TLS WebSocket listeners: ALPN `http/1.1` (the upgrade is HTTP).
    pub websocket: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    pub fn new(cert: CertSource) -> ServerTls {
        let resolver = Arc::new(LiveCert(cert));
        // Stateless TLS 1.3 (and 1.2) session tickets, so a reconnecting client skips
        // the certificate and key exchange work without dealer keeping a cache per
        // session. The key is random per process and rotates (rustls: every 6 hours),
        // so no ticket outlives a restart; reloads keep it. 0-RTT stays off
        // (`max_early_data_size` 0): early data could be replayed.
        let tickets = rustls::crypto::aws_lc_rs::Ticketer::new().ok();
        let build = |alpn: Option<&[u8]>| {
            let mut c = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .expect("aws-lc-rs supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            if let Some(p) = alpn {
                c.alpn_protocols = vec![p.to_vec()];
            }
            if let Some(t) = &tickets {
                c.ticketer = t.clone();
            }
            Arc::new(c)
        };
        ServerTls {
            starttls: build(None),
            direct_client: build(Some(ALPN_CLIENT)),
            direct_server: build(Some(ALPN_SERVER)),
            websocket: build(Some(b"http/1.1")),
        }
    }
}

/// Client config for TLS legs to backends: TLS 1.3 only (a TLS 1.2 leg lets the
/// backend offer channel binding and reject the client's SCRAM `y` flag, DESIGN.md
/// §3.4). Backends sit on the operator's own network and commonly carry self-signed
/// certificates, so the leg encrypts without authenticating the backend; run it over
/// a trusted network (documented).
pub fn backend_client_config() -> Arc<rustls::ClientConfig> {
    backend_client_config_with(provider())
}

/// The same with another crypto provider (the benches' clients use ring's, whose
/// key exchange is X25519 only, as HAProxy's OpenSSL 3.0 has no ML-KEM).
pub fn backend_client_config_with(provider: Arc<CryptoProvider>) -> Arc<rustls::ClientConfig> {
    let c = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
        .with_no_client_auth();
    Arc::new(c)
}

/// Verifies the handshake signature but not the certificate chain (see
/// `backend_client_config`).
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Client config for s2s links to the federation: TLS 1.2 or 1.3, encryption only —
/// the peer's domain is authenticated by dialback, not by its certificate (certificate
/// authentication, SASL EXTERNAL, is not supported yet).
pub fn s2s_client_config() -> Arc<rustls::ClientConfig> {
    let c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
        .with_no_client_auth();
    Arc::new(c)
}
