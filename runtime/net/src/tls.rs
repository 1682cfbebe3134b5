//! TLS 1.3 configurations: a throwaway server certificate, and a client
//! that checks the handshake signature but not the certificate's issuer
//! (the pre-shared-key proof authenticates the server instead).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{NetError, Options};

/// The name in the certificate and the one the client asks for.
const SERVER_NAME: &str = "wasmover-agent";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration with a certificate generated now.
pub(crate) fn server_config() -> Result<Arc<rustls::ServerConfig>, NetError> {
    let generated = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .map_err(|e| NetError::Tls(rustls::Error::General(format!("certificate: {e}"))))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .map_err(NetError::Tls)?;
    // One connection per transfer: no resumption to offer.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client connection that accepts the server's certificate as it is.
pub(crate) fn client(_options: &Options) -> Result<rustls::Connection, NetError> {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
    rustls::ClientConnection::new(Arc::new(config), name)
        .map(Into::into)
        .map_err(NetError::Tls)
}

/// Trusts any certificate but still verifies that the server holds its
/// private key; who the server is, the pre-shared-key proof establishes.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is enabled.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
