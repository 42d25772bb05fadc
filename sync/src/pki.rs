//! The private PKI of one onshi deployment: a CA, the reconciler's server certificate and one client
//! certificate per facility, as PEM files in one directory (the layout `onshi-reconciler pki init`
//! makes and `--pki DIR` reads), and the one rule for reading a facility's identity out of a
//! certificate.
//!
//! Layout of `DIR`:
//! - `ca.pem`, `ca.key`: the CA (the key never leaves the reconciler's machine).
//! - `reconciler.pem`, `reconciler.key`: the server certificate; SANs `reconciler.onshi`,
//!   `localhost`, `127.0.0.1`, `::1`; extended key usage serverAuth.
//! - `facility-CODE.pem`, `facility-CODE.key`: a facility's client certificate; extended key usage
//!   clientAuth.
//!
//! **Facility identity in a certificate**: the subject common name is the 10-digit facility code,
//! and the certificate carries exactly one subject-alternative-name URI `onshi:facility:CODE`.
//! [`facility_of_certificate`] requires both and requires them to agree; the link authorises a
//! peer by this code, never by "the handshake succeeded".
//!
//! A facility's certificate is re-issued by [`issue_facility`] (`onshi-reconciler facility add`):
//! a new key and certificate, the old pair moved into `DIR/replaced/`. The centre accepts only
//! the certificate whose [`Fingerprint`] it recorded, so the replaced one stops working.
//!
//! This module must never overwrite or delete an existing key or certificate (re-running `init`
//! only adds what is missing; a re-issue moves the old pair aside), and never writes a key
//! readable by anyone but its owner (mode 0600).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{Datelike, Utc};
use onshi_model::FacilityCode;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const RECONCILER_CERT_FILE: &str = "reconciler.pem";
pub const RECONCILER_KEY_FILE: &str = "reconciler.key";

/// The name the reconciler's certificate is issued for, and the name every edge expects (a fixed
/// TLS server name, so an edge can dial `127.0.0.1:port` or any address and still verify).
pub const SERVER_NAME: &str = "reconciler.onshi";

/// The SAN URI that carries a facility code: `onshi:facility:1311234567`.
pub const FACILITY_URI_PREFIX: &str = "onshi:facility:";

/// Followed by a random tag, so that two deployments' CAs never share a name (a certificate from
/// the other one then fails as "unknown issuer", which is what it is).
const CA_COMMON_NAME: &str = "onshi private CA";
const ORGANISATION: &str = "onshi";
const CA_YEARS: i32 = 20;
const LEAF_YEARS: i32 = 10;

pub fn facility_cert_file(facility: &FacilityCode) -> String {
    format!("facility-{facility}.pem")
}

pub fn facility_key_file(facility: &FacilityCode) -> String {
    format!("facility-{facility}.key")
}

/// What `init` did, for the CLI to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiSummary {
    pub dir: PathBuf,
    /// False when an existing CA was reused.
    pub ca_created: bool,
    pub reconciler_created: bool,
    /// Facility certificates written by this run.
    pub facilities_added: Vec<FacilityCode>,
    /// Facilities asked for that already had a certificate (kept as they were).
    pub facilities_kept: Vec<FacilityCode>,
}

impl std::fmt::Display for PkiSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[FacilityCode]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            }
        };
        writeln!(f, "PKI in {}", self.dir.display())?;
        writeln!(
            f,
            "  CA:         {}",
            if self.ca_created {
                "created (ca.pem, ca.key)"
            } else {
                "kept (existing ca.pem)"
            }
        )?;
        writeln!(
            f,
            "  reconciler: {}",
            if self.reconciler_created {
                "created (reconciler.pem, reconciler.key)"
            } else {
                "kept"
            }
        )?;
        writeln!(f, "  facilities added: {}", list(&self.facilities_added))?;
        write!(f, "  facilities kept:  {}", list(&self.facilities_kept))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create PKI directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{path} is missing (make it with `onshi-reconciler pki init --dir {dir}`)", dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path} exists but {missing} does not; refusing to overwrite it: move {path} away to regenerate the pair"
    )]
    HalfPair { path: PathBuf, missing: PathBuf },
    #[error("{path} does not hold a PEM {what}: {reason}")]
    BadPem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("generating the {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
}

/// Why a certificate does not name a facility.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate does not parse as X.509: {0}")]
    Unparseable(String),
    #[error("certificate has no subject-alternative-name URI {FACILITY_URI_PREFIX}CODE")]
    NoFacilityUri,
    #[error("certificate has {0} facility URIs; exactly one is allowed")]
    SeveralFacilityUris(usize),
    #[error("certificate's facility URI holds {got:?}, not a facility code: {reason}")]
    BadFacilityCode { got: String, reason: String },
    #[error("certificate's subject common name {cn:?} does not match its facility URI code {uri}")]
    CommonNameMismatch { cn: String, uri: String },
}

/// The facility a client certificate (DER) names; see the module doc for the rule.
pub fn facility_of_certificate(der: &[u8]) -> Result<FacilityCode, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => {
                        u.strip_prefix(FACILITY_URI_PREFIX)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let raw = match uris.as_slice() {
        [] => return Err(IdentityError::NoFacilityUri),
        [one] => *one,
        many => return Err(IdentityError::SeveralFacilityUris(many.len())),
    };
    let code = FacilityCode::parse(raw).map_err(|e| IdentityError::BadFacilityCode {
        got: raw.to_string(),
        reason: e.to_string(),
    })?;
    // parse() folds width and trims; the certificate must carry the canonical form exactly.
    if code.as_str() != raw {
        return Err(IdentityError::BadFacilityCode {
            got: raw.to_string(),
            reason: "not in canonical 10-digit form".into(),
        });
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("");
    if cn != code.as_str() {
        return Err(IdentityError::CommonNameMismatch {
            cn: cn.to_string(),
            uri: code.to_string(),
        });
    }
    Ok(code)
}

/// The reconciler's side: its certificate chain, key, and the CA that client certificates must
/// chain to.
pub struct ServerIdentity {
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A facility's side: its certificate chain and key, and the CA the reconciler must chain to.
pub struct ClientIdentity {
    pub facility: FacilityCode,
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

// Hand-written so that no Debug output can ever carry key material.
impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("facility", &self.facility)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        ServerIdentity {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            facility: self.facility.clone(),
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Make (or complete) the PKI in `dir`: a CA if there is none, the reconciler's certificate if
/// missing, and a certificate for each facility in `facilities` that has none. Existing files are
/// reused and never overwritten.
pub fn init(dir: &Path, facilities: &[FacilityCode]) -> Result<PkiSummary, PkiError> {
    create_dir(dir)?;
    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let (ca, ca_created) = match pair_state(&ca_cert_path, &ca_key_path)? {
        PairState::Both => (load_ca(&ca_cert_path, &ca_key_path)?, false),
        PairState::Neither => (create_ca(&ca_cert_path, &ca_key_path)?, true),
    };

    let reconciler_created = match pair_state(
        &dir.join(RECONCILER_CERT_FILE),
        &dir.join(RECONCILER_KEY_FILE),
    )? {
        PairState::Both => false,
        PairState::Neither => {
            let mut params = leaf_params(SERVER_NAME)?;
            params.subject_alt_names = vec![
                dns(SERVER_NAME)?,
                dns("localhost")?,
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            issue(
                &ca,
                params,
                "reconciler certificate",
                &dir.join(RECONCILER_CERT_FILE),
                &dir.join(RECONCILER_KEY_FILE),
            )?;
            true
        }
    };

    let mut facilities_added = Vec::new();
    let mut facilities_kept = Vec::new();
    // A set, so that a facility given twice on the command line is issued once.
    for facility in facilities.iter().collect::<BTreeSet<_>>() {
        let cert_path = dir.join(facility_cert_file(facility));
        let key_path = dir.join(facility_key_file(facility));
        match pair_state(&cert_path, &key_path)? {
            PairState::Both => facilities_kept.push(facility.clone()),
            PairState::Neither => {
                issue_facility_pair(&ca, facility, &cert_path, &key_path)?;
                facilities_added.push(facility.clone());
            }
        }
    }
    Ok(PkiSummary {
        dir: dir.to_path_buf(),
        ca_created,
        reconciler_created,
        facilities_added,
        facilities_kept,
    })
}

/// What [`issue_facility`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFacility {
    pub facility: FacilityCode,
    /// The new certificate's fingerprint: the one the centre records as accepted.
    pub fingerprint: Fingerprint,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The files of the certificate this one replaces, moved into `DIR/replaced/` (empty for a
    /// facility's first certificate).
    pub replaced: Vec<PathBuf>,
}

/// The folder of `DIR` that keeps the files of replaced facility certificates (never deleted:
/// the operator decides; `facilities_in` does not look into it).
pub const REPLACED_DIR: &str = "replaced";

/// Issues a NEW key and certificate for `facility` under the CA in `dir` (which must exist: a
/// typo in the directory must not found a second CA). A certificate already there is not
/// overwritten but moved, with its key, into `DIR/replaced/` under a name with the time; the
/// centre then refuses it once the new fingerprint is recorded.
pub fn issue_facility(dir: &Path, facility: &FacilityCode) -> Result<IssuedFacility, PkiError> {
    let ca = load_ca(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))?;
    let cert_path = dir.join(facility_cert_file(facility));
    let key_path = dir.join(facility_key_file(facility));
    let mut replaced = Vec::new();
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    for (path, ext) in [(&cert_path, "pem"), (&key_path, "key")] {
        if !exists(path)? {
            continue;
        }
        let archive = dir.join(REPLACED_DIR);
        create_dir(&archive)?;
        let to = archive.join(format!("facility-{facility}-{stamp}.{ext}"));
        // A hard link then an unlink: never replaces a file already at `to`.
        fs::hard_link(path, &to)
            .and_then(|()| fs::remove_file(path))
            .map_err(|source| PkiError::Write {
                path: to.clone(),
                source,
            })?;
        replaced.push(to);
    }
    let der = issue_facility_pair(&ca, facility, &cert_path, &key_path)?;
    Ok(IssuedFacility {
        facility: facility.clone(),
        fingerprint: Fingerprint::of(&der),
        cert_path,
        key_path,
        replaced,
    })
}

/// The fingerprint of the certificate `dir` holds for `facility`, which must name it.
pub fn facility_fingerprint(dir: &Path, facility: &FacilityCode) -> Result<Fingerprint, PkiError> {
    let chain = facility_chain(dir, facility)?;
    Ok(Fingerprint::of(&chain[0]))
}

/// The certificate chain `dir` holds for `facility`; its leaf must name the facility.
fn facility_chain(
    dir: &Path,
    facility: &FacilityCode,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let cert_path = dir.join(facility_cert_file(facility));
    let chain = read_certs(&cert_path)?;
    let named = facility_of_certificate(&chain[0]).map_err(|e| PkiError::BadCertificate {
        path: cert_path.clone(),
        reason: e.to_string(),
    })?;
    if &named != facility {
        return Err(PkiError::BadCertificate {
            path: cert_path,
            reason: format!("names facility {named}, not {facility}"),
        });
    }
    Ok(chain)
}

/// The SHA-256 of a certificate's DER: what the centre records as the one certificate it
/// accepts for a facility (written as 64 lower-case hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

/// Why a text is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fingerprint {got:?}: {reason}")]
pub struct FingerprintError {
    pub got: String,
    pub reason: &'static str,
}

impl Fingerprint {
    /// The fingerprint of a certificate (DER).
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// From 64 hex digits (either case).
    pub fn parse(text: &str) -> Result<Self, FingerprintError> {
        let bad = |reason| FingerprintError {
            got: text.chars().take(80).collect(),
            reason,
        };
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(bad("must be 64 hex digits (SHA-256)"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let digit = |b: u8| (b as char).to_digit(16).ok_or_else(|| bad("not hex"));
            out[i] =
                u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).map_err(|_| bad("not hex"))?;
        }
        Ok(Fingerprint(out))
    }

    /// The first 16 hex digits, for lists and logs.
    pub fn short(&self) -> String {
        self.to_string()[..16].to_string()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The reconciler's identity from `dir` (as `init` laid it out).
pub fn load_server(dir: &Path) -> Result<ServerIdentity, PkiError> {
    let ca = read_ca(dir)?;
    let chain = read_certs(&dir.join(RECONCILER_CERT_FILE))?;
    let key = read_key(&dir.join(RECONCILER_KEY_FILE))?;
    Ok(ServerIdentity { ca, chain, key })
}

/// A facility's identity from `dir`; the certificate must name `facility` (by the module's rule).
pub fn load_client(dir: &Path, facility: &FacilityCode) -> Result<ClientIdentity, PkiError> {
    let ca = read_ca(dir)?;
    let chain = facility_chain(dir, facility)?;
    let key = read_key(&dir.join(facility_key_file(facility)))?;
    Ok(ClientIdentity {
        facility: facility.clone(),
        ca,
        chain,
        key,
    })
}

/// A facility's certificate, key and CA as handed to IT staff, checked before they are installed.
#[derive(Debug)]
pub struct FacilityFiles {
    pub facility: FacilityCode,
    /// The certificate's end of validity.
    pub not_after: chrono::DateTime<Utc>,
}

/// Checks the files `onshi-edge enroll` is given: each reads as PEM; the certificate names a
/// facility (the module's rule) and, if `expected` is given, that one; the key belongs to the
/// certificate; the certificate chains to `ca` and is valid now for client authentication (the
/// reconciler's own TLS rules). Each error names the file and the reason.
pub fn verify_facility_files(
    ca: &Path,
    cert: &Path,
    key: &Path,
    expected: Option<&FacilityCode>,
) -> Result<FacilityFiles, PkiError> {
    let ca_der = read_certs(ca)?.swap_remove(0);
    let chain = read_certs(cert)?;
    let key_der = read_key(key)?;
    let bad = |path: &Path, reason: String| PkiError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let facility = facility_of_certificate(&chain[0]).map_err(|e| bad(cert, e.to_string()))?;
    if let Some(want) = expected
        && want != &facility
    {
        return Err(bad(
            cert,
            format!("names facility {facility}, not {want} (the facility given or configured)"),
        ));
    }
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| bad(cert, e.to_string()))?;
    let pair = KeyPair::try_from(&key_der).map_err(|e| PkiError::BadPem {
        path: key.to_path_buf(),
        what: "private key",
        reason: e.to_string(),
    })?;
    if rcgen::PublicKeyData::der_bytes(&pair)
        != parsed.public_key().subject_public_key.data.as_ref()
    {
        return Err(bad(
            key,
            format!(
                "is not the key of the certificate in {} (their public keys differ)",
                cert.display()
            ),
        ));
    }
    verify_client_chain(&ca_der, &chain).map_err(|reason| {
        let why = if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
            "it was not issued by this CA"
        } else if reason.contains("Expired") {
            "it has expired"
        } else if reason.contains("NotValidYet") {
            "it is not valid yet (is this machine's clock right?)"
        } else if reason.contains("InvalidPurpose") {
            "it is not a client certificate"
        } else {
            "it does not verify"
        };
        bad(
            cert,
            format!(
                "is not accepted under the CA in {}: {why} ({reason})",
                ca.display()
            ),
        )
    })?;
    let not_after = chrono::DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0)
        .unwrap_or_default();
    Ok(FacilityFiles {
        facility,
        not_after,
    })
}

/// The facilities that have a certificate in `dir` (`facility-CODE.pem`), sorted: the reconciler's
/// default set of known facilities. Files whose name is not a facility code are skipped with a
/// warning; an unreadable directory gives an empty list (and a warning).
pub fn facilities_in(dir: &Path) -> Vec<FacilityCode> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list the PKI directory; no facilities known");
            return Vec::new();
        }
    };
    let mut out = BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(code) = name
            .strip_prefix("facility-")
            .and_then(|r| r.strip_suffix(".pem"))
        else {
            continue;
        };
        match FacilityCode::parse(code) {
            Ok(code) => {
                out.insert(code);
            }
            Err(e) => {
                tracing::warn!(file = %entry.path().display(), error = %e, "skipping a facility certificate whose file name is not a facility code")
            }
        }
    }
    out.into_iter().collect()
}

// ---- internals -------------------------------------------------------------------------------

enum PairState {
    Both,
    Neither,
}

/// Both files present, neither, or an error for a half pair (never silently regenerate one half).
fn pair_state(cert: &Path, key: &Path) -> Result<PairState, PkiError> {
    match (exists(cert)?, exists(key)?) {
        (true, true) => Ok(PairState::Both),
        (false, false) => Ok(PairState::Neither),
        (true, false) => Err(PkiError::HalfPair {
            path: cert.to_path_buf(),
            missing: key.to_path_buf(),
        }),
        (false, true) => Err(PkiError::HalfPair {
            path: key.to_path_buf(),
            missing: cert.to_path_buf(),
        }),
    }
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Only applies to directories this call creates; an existing directory keeps its mode.
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| PkiError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

fn dns(name: &str) -> Result<SanType, PkiError> {
    Ok(SanType::DnsName(name.try_into().map_err(|source| {
        PkiError::Generate {
            what: format!("DNS name {name}"),
            source,
        }
    })?))
}

fn uri(u: &str) -> Result<SanType, PkiError> {
    Ok(SanType::URI(u.try_into().map_err(|source| {
        PkiError::Generate {
            what: format!("URI {u}"),
            source,
        }
    })?))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and never a leading zero byte, so the DER integer is exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Valid from yesterday (clock skew between machines) for `years` years.
fn validity(params: &mut CertificateParams, years: i32) {
    let today = Utc::now().date_naive();
    let from = today.pred_opt().unwrap_or(today);
    // Day capped at 28 so that the end date exists in every year.
    let day = from.day().min(28) as u8;
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, day);
    params.not_after = rcgen::date_time_ymd(from.year() + years, from.month() as u8, day);
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANISATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name =
        distinguished_name(&format!("{CA_COMMON_NAME} {:08x}", rand::random::<u32>()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    validity(&mut params, CA_YEARS);
    params
}

fn leaf_params(common_name: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, LEAF_YEARS);
    Ok(params)
}

/// The CA, ready to sign, plus its subject as DER (to check that what we sign chains to it).
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    subject_der: Vec<u8>,
    cert_path: PathBuf,
}

fn create_ca(cert_path: &Path, key_path: &Path) -> Result<Ca, PkiError> {
    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "CA key".into(),
        source,
    })?;
    let params = ca_params();
    let cert = params
        .self_signed(&key)
        .map_err(|source| PkiError::Generate {
            what: "CA certificate".into(),
            source,
        })?;
    write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
    let subject_der = subject_of(cert.der(), cert_path)?;
    Ok(Ca {
        issuer: Issuer::new(params, key),
        subject_der,
        cert_path: cert_path.to_path_buf(),
    })
}

fn load_ca(cert_path: &Path, key_path: &Path) -> Result<Ca, PkiError> {
    let der = read_certs(cert_path)?.swap_remove(0);
    let key_pem = read_text(key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadPem {
        path: key_path.to_path_buf(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let bad = |reason: String| PkiError::BadCertificate {
        path: cert_path.to_path_buf(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| bad(format!("does not parse as X.509: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad(format!(
            "its public key does not match the private key in {}",
            key_path.display()
        )));
    }
    if !cert.is_ca() {
        return Err(bad("is not a CA certificate".into()));
    }
    // Rebuild the issuer from the CA's own subject names (rcgen writes them as UTF-8 strings, the
    // same way we wrote them); `issue` checks the result byte for byte.
    let mut dn = DistinguishedName::new();
    for org in cert.subject().iter_organization() {
        dn.push(
            DnType::OrganizationName,
            org.as_str()
                .map_err(|e| bad(format!("organisation name: {e}")))?,
        );
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| bad("has no common name".into()))?;
    dn.push(
        DnType::CommonName,
        cn.as_str().map_err(|e| bad(format!("common name: {e}")))?,
    );
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let subject_der = cert.subject().as_raw().to_vec();
    Ok(Ca {
        issuer: Issuer::new(params, key),
        subject_der,
        cert_path: cert_path.to_path_buf(),
    })
}

fn subject_of(der: &[u8], path: &Path) -> Result<Vec<u8>, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::BadCertificate {
            path: path.to_path_buf(),
            reason: format!("does not parse as X.509: {e}"),
        })?;
    Ok(cert.subject().as_raw().to_vec())
}

/// A facility's client certificate and key, written to new files; returns the certificate's DER.
fn issue_facility_pair(
    ca: &Ca,
    facility: &FacilityCode,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Vec<u8>, PkiError> {
    let mut params = leaf_params(facility.as_str())?;
    params.subject_alt_names = vec![uri(&format!("{FACILITY_URI_PREFIX}{facility}"))?];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(
        ca,
        params,
        &format!("certificate of facility {facility}"),
        cert_path,
        key_path,
    )
}

fn issue(
    ca: &Ca,
    params: CertificateParams,
    what: &str,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Vec<u8>, PkiError> {
    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: format!("key for the {what}"),
        source,
    })?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| PkiError::Generate {
            what: what.to_string(),
            source,
        })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.der()).map_err(|e| PkiError::Generate {
            what: format!("{what} (does not re-parse: {e})"),
            source: rcgen::Error::CouldNotParseCertificate,
        })?;
    if parsed.issuer().as_raw() != ca.subject_der.as_slice() {
        return Err(PkiError::BadCertificate {
            path: ca.cert_path.clone(),
            reason: "its subject name cannot be reproduced for signing (not made by onshi?)".into(),
        });
    }
    // Key first: a crash in between leaves a key without a certificate, which `init` reports
    // rather than silently replacing.
    write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(cert.der().to_vec())
}

/// Create `path` (failing if it exists) with `mode`, write and fsync it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the key is never readable by others even for an instant.
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => PkiError::Missing {
            path: path.to_path_buf(),
        },
        _ => PkiError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    String::from_utf8(read_bytes(path)?).map_err(|_| PkiError::BadPem {
        path: path.to_path_buf(),
        what: "file",
        reason: "not UTF-8 text".into(),
    })
}

fn read_ca(dir: &Path) -> Result<CertificateDer<'static>, PkiError> {
    Ok(read_certs(&dir.join(CA_CERT_FILE))?.swap_remove(0))
}

/// All certificates in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read_bytes(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::BadPem {
            path: path.to_path_buf(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::BadPem {
            path: path.to_path_buf(),
            what: "certificate",
            reason: "no CERTIFICATE section".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read_bytes(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PkiError::BadPem {
        path: path.to_path_buf(),
        what: "private key",
        reason: e.to_string(),
    })
}

/// Whether `chain` (leaf first) is a client certificate the reconciler would accept by its TLS
/// rules: signed by `ca`, within its validity period now, usable for client authentication. The
/// reason comes back as rustls words it (e.g. `UnknownIssuer`, `Expired`).
fn verify_client_chain(
    ca: &rustls_pki_types::CertificateDer<'static>,
    chain: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<(), String> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("no certificate".into());
    };
    // The link's rules (link/tls.rs builds its verifier the same way): ring, this CA only.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> FacilityCode {
        FacilityCode::parse(s).expect("test facility code")
    }

    #[test]
    fn init_writes_layout_and_identity_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = code("1311234567");
        let summary = init(dir.path(), &[a.clone(), a.clone()]).expect("init");
        assert!(summary.ca_created && summary.reconciler_created);
        assert_eq!(summary.facilities_added, vec![a.clone()]);
        let client = load_client(dir.path(), &a).expect("load client");
        assert_eq!(
            facility_of_certificate(&client.chain[0]).expect("facility"),
            a
        );
        load_server(dir.path()).expect("load server");
        assert_eq!(facilities_in(dir.path()), vec![a]);
    }

    #[test]
    fn a_reissue_is_a_new_key_and_certificate_and_keeps_the_old_pair_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = code("1311234567");
        let b = code("1341234567");
        init(dir.path(), std::slice::from_ref(&a)).expect("init");
        let first = facility_fingerprint(dir.path(), &a).expect("fingerprint");
        let old_key = fs::read(dir.path().join(facility_key_file(&a))).expect("key");

        // A new facility: no files to move.
        let issued = issue_facility(dir.path(), &b).expect("add b");
        assert!(issued.replaced.is_empty());
        assert_eq!(
            facility_fingerprint(dir.path(), &b).expect("b"),
            issued.fingerprint
        );
        load_client(dir.path(), &b).expect("b's identity loads");

        // A re-issue: a new fingerprint and key; the old pair moved, byte for byte.
        let again = issue_facility(dir.path(), &a).expect("re-issue a");
        assert_ne!(again.fingerprint, first);
        assert_ne!(
            fs::read(dir.path().join(facility_key_file(&a))).expect("key"),
            old_key
        );
        assert_eq!(again.replaced.len(), 2, "{:?}", again.replaced);
        let kept: Vec<Vec<u8>> = again
            .replaced
            .iter()
            .map(|p| fs::read(p).expect("kept"))
            .collect();
        assert!(kept.contains(&old_key), "the old key is kept");
        assert!(
            kept.iter().any(|c| {
                CertificateDer::pem_slice_iter(c)
                    .next()
                    .is_some_and(|d| d.is_ok_and(|d| Fingerprint::of(&d) == first))
            }),
            "the old certificate is kept"
        );
        assert_eq!(
            facilities_in(dir.path()),
            vec![a.clone(), b],
            "replaced/ is not read"
        );

        // No CA: refused, nothing written.
        let empty = tempfile::tempdir().expect("tempdir");
        let err = issue_facility(empty.path(), &a).expect_err("no CA");
        assert!(err.to_string().contains("ca.pem is missing"), "{err}");
        assert!(!empty.path().join(facility_cert_file(&a)).exists());
    }

    #[test]
    fn a_fingerprint_is_64_lower_case_hex_digits_and_reads_back() {
        let fp = Fingerprint::of(b"certificate");
        let text = fp.to_string();
        assert_eq!(text.len(), 64);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(Fingerprint::parse(&text), Ok(fp));
        assert_eq!(Fingerprint::parse(&text.to_uppercase()), Ok(fp));
        assert_eq!(fp.short(), text[..16]);
        assert!(Fingerprint::parse(&text[1..]).is_err());
        assert!(Fingerprint::parse(&format!("{}zz", &text[2..])).is_err());
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_server(dir.path()).expect_err("empty dir");
        assert!(matches!(err, PkiError::Missing { .. }));
        assert!(err.to_string().contains("ca.pem is missing"), "{err}");
    }

    #[test]
    fn half_pair_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &[]).expect("init");
        fs::remove_file(dir.path().join(RECONCILER_CERT_FILE)).expect("rm");
        let before = fs::read(dir.path().join(RECONCILER_KEY_FILE)).expect("read key");
        let err = init(dir.path(), &[]).expect_err("half pair");
        assert!(matches!(err, PkiError::HalfPair { .. }), "{err}");
        assert_eq!(
            fs::read(dir.path().join(RECONCILER_KEY_FILE)).expect("read key"),
            before
        );
    }

    #[test]
    fn server_certificate_names_no_facility() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &[]).expect("init");
        let server = load_server(dir.path()).expect("load");
        assert_eq!(
            facility_of_certificate(&server.chain[0]),
            Err(IdentityError::NoFacilityUri)
        );
        assert!(matches!(
            facility_of_certificate(b"junk"),
            Err(IdentityError::Unparseable(_))
        ));
    }
}
