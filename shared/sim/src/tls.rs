//! The simulator's own PKI: a CA certificate and a server certificate it signs for
//! `localhost`, `127.0.0.1` and `sim.local`. Generated once per directory and reused.
//!
//! The CA's private key is never written anywhere: it signs the server
//! certificate once, in memory, and nothing needs it again. A throwaway
//! simulator (no data dir) writes only the CA certificate, which clients
//! and booted nodes are handed by path: a process killed before it could
//! remove its temporary directory leaves no private key behind.

use crate::SimError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

const CA_CERT: &str = "ca.pem";
/// Written by earlier versions; removed when found.
const OLD_CA_KEY: &str = "ca-key.pem";
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
    /// Loads the CA certificate and the server's certificate and key from
    /// `dir`, or generates them if any is missing. With `keep` they are
    /// written for the next start; without it only the CA certificate is.
    pub fn load_or_generate(dir: &Path, keep: bool) -> Result<TlsMaterial, SimError> {
        let paths = [CA_CERT, SERVER_CERT, SERVER_KEY].map(|f| dir.join(f));
        if keep {
            let _ = std::fs::remove_file(dir.join(OLD_CA_KEY));
        }
        if keep && paths.iter().all(|p| p.exists()) {
            let read = |p: &PathBuf| std::fs::read_to_string(p);
            return Ok(TlsMaterial {
                ca_cert_pem: read(&paths[0])?,
                ca_cert_path: paths[0].clone(),
                server_cert_pem: read(&paths[1])?,
                server_key_pem: read(&paths[2])?,
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
        if keep {
            // The key first: a start that finds the certificate finds its key.
            write_file(&paths[2], &material.server_key_pem, true)?;
            write_file(&paths[1], &material.server_cert_pem, false)?;
        }
        write_file(&paths[0], &material.ca_cert_pem, false)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_throwaway_simulator_writes_its_ca_certificate_and_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::load_or_generate(dir.path(), false).unwrap();
        assert_eq!(names(dir.path()), ["ca.pem"]);
        let on_disk = std::fs::read_to_string(&m.ca_cert_path).unwrap();
        assert_eq!(on_disk, m.ca_cert_pem);
        assert!(on_disk.contains("BEGIN CERTIFICATE") && !on_disk.contains("PRIVATE KEY"));
        assert!(
            m.server_key_pem.contains("PRIVATE KEY"),
            "the key is in memory"
        );
    }

    #[test]
    fn a_kept_directory_is_reused_without_the_ca_key_and_loses_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OLD_CA_KEY), "an earlier version's key").unwrap();
        let first = TlsMaterial::load_or_generate(dir.path(), true).unwrap();
        assert_eq!(
            names(dir.path()),
            ["ca.pem", "server-key.pem", "server.pem"]
        );
        let again = TlsMaterial::load_or_generate(dir.path(), true).unwrap();
        assert_eq!(again.ca_cert_pem, first.ca_cert_pem);
        assert_eq!(again.server_cert_pem, first.server_cert_pem);
        assert_eq!(again.server_key_pem, first.server_key_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SERVER_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
