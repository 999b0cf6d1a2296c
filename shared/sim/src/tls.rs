//! The simulator's own PKI: a CA certificate and a server certificate it signs for
//! `localhost`, `127.0.0.1` and `sim.local`. Generated once per directory and reused.

use crate::SimError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";

/// PEM material the server needs, and where the CA certificate lives.
pub(crate) struct TlsMaterial {
    pub ca_cert_pem: String,
    pub ca_cert_path: PathBuf,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

fn tls_err(e: impl std::fmt::Display) -> SimError {
    SimError::Tls(e.to_string())
}

impl TlsMaterial {
    /// Loads the four PEM files from `dir`, or generates (and writes) them if any is missing.
    pub fn load_or_generate(dir: &Path) -> Result<TlsMaterial, SimError> {
        let paths = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY].map(|f| dir.join(f));
        if paths.iter().all(|p| p.exists()) {
            let read = |p: &PathBuf| std::fs::read_to_string(p);
            return Ok(TlsMaterial {
                ca_cert_pem: read(&paths[0])?,
                ca_cert_path: paths[0].clone(),
                server_cert_pem: read(&paths[2])?,
                server_key_pem: read(&paths[3])?,
            });
        }
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "flotilla Azure simulator CA");
        ca_params.distinguished_name = dn;
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let server_key = KeyPair::generate().map_err(tls_err)?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "sim.local".to_string(),
        ])
        .map_err(tls_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &issuer).map_err(tls_err)?;

        let material = TlsMaterial {
            ca_cert_pem: ca_cert.pem(),
            ca_cert_path: paths[0].clone(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        };
        write_file(&paths[0], &material.ca_cert_pem, false)?;
        write_file(&paths[1], &ca_key.serialize_pem(), true)?;
        write_file(&paths[2], &material.server_cert_pem, false)?;
        write_file(&paths[3], &material.server_key_pem, true)?;
        Ok(material)
    }
}

/// Writes a file; private keys get mode 0600 on Unix.
fn write_file(path: &Path, content: &str, private: bool) -> Result<(), SimError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
