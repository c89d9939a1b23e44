//! `tokenvault._native`: the Python face of the tokenvault library.
//!
//! The Python package `tokenvault` re-exports everything defined here (`Vault`, `Token`,
//! `VerifyReport` and the exceptions); this crate only translates. Invariants:
//! - every call into the vault runs with the GIL released (`Python::detach`), so the KDF of
//!   `open`, `rekey` and `verify` never stalls other Python threads;
//! - every library error becomes one exception class under `tokenvault.Error`; nothing
//!   panics across the boundary;
//! - a `Token`'s secrets never appear in its `repr`, and are zeroized when it is freed;
//! - passphrases are copied out of Python only into zeroizing buffers.
//!
//! With the feature `etcd`, `create` and `open` also take `etcd://` locations; without it
//! such a location is a `ValueError` that says how to build the package with it.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping, PyString, PyTuple};
use pyo3::{create_exception, intern};
use tokenvault::{
    Engine, Field, KdfParams, OAuthToken, TokenStore, VaultOptions, VerifyReport as CoreReport,
};
use zeroize::{Zeroize, Zeroizing};

create_exception!(
    tokenvault,
    Error,
    PyException,
    "Base class of every error raised by tokenvault."
);
create_exception!(
    tokenvault,
    WrongPassphrase,
    Error,
    "The passphrase does not unlock the vault. Nothing was changed."
);
create_exception!(
    tokenvault,
    Corrupted,
    Error,
    "A header or record failed authentication or decoding: the vault's files are damaged or were tampered with."
);
create_exception!(
    tokenvault,
    InvalidToken,
    Error,
    "A save carried nothing to store or to match on, or would give a second token the same user name. Nothing was written."
);
create_exception!(
    tokenvault,
    VaultExists,
    Error,
    "`Vault.create` found a vault, or some other non-empty directory, at the location."
);
create_exception!(
    tokenvault,
    VaultNotFound,
    Error,
    "`Vault.open` found no vault at the location (and created nothing there)."
);
create_exception!(
    tokenvault,
    VaultLocked,
    Error,
    "The vault is open elsewhere: in another process, or through another Vault in this one."
);
create_exception!(
    tokenvault,
    InvalidKdfParams,
    Error,
    "Argon2id parameters outside the accepted floor and ceiling."
);
create_exception!(
    tokenvault,
    StorageError,
    Error,
    "The file system or the storage engine failed."
);

/// The exception for a library error. Messages never carry a secret (the library's
/// `Display` guarantees it).
fn raise(e: tokenvault::Error) -> PyErr {
    use tokenvault::Error as E;
    let message = e.to_string();
    match e {
        E::WrongPassphrase => WrongPassphrase::new_err(message),
        E::Corrupted { .. } => Corrupted::new_err(message),
        E::InvalidToken { .. } => InvalidToken::new_err(message),
        E::VaultExists => VaultExists::new_err(message),
        E::VaultNotFound => VaultNotFound::new_err(message),
        E::VaultLocked => VaultLocked::new_err(message),
        E::InvalidKdfParams { .. } => InvalidKdfParams::new_err(message),
        E::Io(_) | E::Storage { .. } => StorageError::new_err(message),
        _ => Error::new_err(message),
    }
}

/// An OAuth token as the Zoho CRM SDKs persist it; every field optional.
///
/// Build one with keywords only::
///
///     Token(user_name="alice@example.com", client_id="1000.ABC",
///           refresh_token="1000.refresh", expiry_time=1764000000000)
///
/// ``expiry_time`` is an int, milliseconds since the Unix epoch; every other field is a str
/// or None. An empty string counts as absent when the token is saved. ``repr()`` never shows
/// the secrets (client_secret, grant_token, refresh_token, access_token); ``to_dict()``
/// does, deliberately.
#[pyclass(module = "tokenvault", name = "Token", eq)]
#[derive(Clone, Default, PartialEq, Eq)]
struct Token {
    /// The store-assigned id (None until saved).
    #[pyo3(get, set)]
    id: Option<String>,
    /// The user name (the SDK's user signature, the user's email).
    #[pyo3(get, set)]
    user_name: Option<String>,
    /// The OAuth client id.
    #[pyo3(get, set)]
    client_id: Option<String>,
    /// The OAuth client secret (a secret).
    #[pyo3(get, set)]
    client_secret: Option<String>,
    /// The refresh token (a secret).
    #[pyo3(get, set)]
    refresh_token: Option<String>,
    /// The access token (a secret).
    #[pyo3(get, set)]
    access_token: Option<String>,
    /// The grant token (a secret).
    #[pyo3(get, set)]
    grant_token: Option<String>,
    /// When the access token expires, in milliseconds since the Unix epoch.
    #[pyo3(get, set)]
    expiry_time: Option<i64>,
    /// The OAuth redirect URL.
    #[pyo3(get, set)]
    redirect_url: Option<String>,
    /// The API domain the token belongs to.
    #[pyo3(get, set)]
    api_domain: Option<String>,
}

impl Drop for Token {
    fn drop(&mut self) {
        for field in [
            &mut self.id,
            &mut self.user_name,
            &mut self.client_id,
            &mut self.client_secret,
            &mut self.refresh_token,
            &mut self.access_token,
            &mut self.grant_token,
            &mut self.redirect_url,
            &mut self.api_domain,
        ] {
            field.zeroize();
        }
    }
}

/// The field names, in the order of the constructor and of `to_dict`.
const FIELDS: [&str; 10] = [
    "id",
    "user_name",
    "client_id",
    "client_secret",
    "refresh_token",
    "access_token",
    "grant_token",
    "expiry_time",
    "redirect_url",
    "api_domain",
];

impl Token {
    /// The core token: its text copied once, into the token's one buffer.
    fn to_core(&self) -> PyResult<OAuthToken> {
        let texts = [
            (Field::Id, &self.id),
            (Field::UserName, &self.user_name),
            (Field::ClientId, &self.client_id),
            (Field::ClientSecret, &self.client_secret),
            (Field::RefreshToken, &self.refresh_token),
            (Field::AccessToken, &self.access_token),
            (Field::GrantToken, &self.grant_token),
            (Field::RedirectUrl, &self.redirect_url),
            (Field::ApiDomain, &self.api_domain),
        ];
        let given = texts
            .iter()
            .filter_map(|(field, value)| value.as_deref().map(|v| (*field, std::iter::once(v))));
        let mut t = OAuthToken::from_text_pieces(given).map_err(raise)?;
        t.set_expiry_time(self.expiry_time);
        Ok(t)
    }

    fn from_core(t: &OAuthToken) -> Token {
        let own = |v: Option<&str>| v.map(str::to_owned);
        Token {
            id: own(t.id()),
            user_name: own(t.user_name()),
            client_id: own(t.client_id()),
            client_secret: own(t.client_secret()),
            refresh_token: own(t.refresh_token()),
            access_token: own(t.access_token()),
            grant_token: own(t.grant_token()),
            expiry_time: t.expiry_time(),
            redirect_url: own(t.redirect_url()),
            api_domain: own(t.api_domain()),
        }
    }
}

#[pymethods]
impl Token {
    #[new]
    #[pyo3(signature = (*, id=None, user_name=None, client_id=None, client_secret=None,
        refresh_token=None, access_token=None, grant_token=None, expiry_time=None,
        redirect_url=None, api_domain=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: Option<String>,
        user_name: Option<String>,
        client_id: Option<String>,
        client_secret: Option<String>,
        refresh_token: Option<String>,
        access_token: Option<String>,
        grant_token: Option<String>,
        expiry_time: Option<i64>,
        redirect_url: Option<String>,
        api_domain: Option<String>,
    ) -> Token {
        Token {
            id,
            user_name,
            client_id,
            client_secret,
            refresh_token,
            access_token,
            grant_token,
            expiry_time,
            redirect_url,
            api_domain,
        }
    }

    /// Every field as a dict, secrets included: use it only where the secrets belong.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", &self.id)?;
        d.set_item("user_name", &self.user_name)?;
        d.set_item("client_id", &self.client_id)?;
        d.set_item("client_secret", &self.client_secret)?;
        d.set_item("refresh_token", &self.refresh_token)?;
        d.set_item("access_token", &self.access_token)?;
        d.set_item("grant_token", &self.grant_token)?;
        d.set_item("expiry_time", self.expiry_time)?;
        d.set_item("redirect_url", &self.redirect_url)?;
        d.set_item("api_domain", &self.api_domain)?;
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let shown = |v: &Option<String>| -> PyResult<Option<String>> {
            match v {
                Some(s) => Ok(Some(PyString::new(py, s).repr()?.to_string())),
                None => Ok(None),
            }
        };
        let secret = |v: &Option<String>| v.as_ref().map(|_| "[REDACTED]".to_owned());
        let parts = [
            ("id", shown(&self.id)?),
            ("user_name", shown(&self.user_name)?),
            ("client_id", shown(&self.client_id)?),
            ("client_secret", secret(&self.client_secret)),
            ("refresh_token", secret(&self.refresh_token)),
            ("access_token", secret(&self.access_token)),
            ("grant_token", secret(&self.grant_token)),
            ("expiry_time", self.expiry_time.map(|t| t.to_string())),
            ("redirect_url", shown(&self.redirect_url)?),
            ("api_domain", shown(&self.api_domain)?),
        ];
        let body: Vec<String> = parts
            .iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
            .collect();
        Ok(format!("Token({})", body.join(", ")))
    }
}

/// A `Token` or a mapping of its field names (unknown names are a `TypeError`, as for the
/// constructor).
fn token_arg(obj: &Bound<'_, PyAny>) -> PyResult<OAuthToken> {
    if let Ok(t) = obj.cast::<Token>() {
        return t.borrow().to_core();
    }
    let py = obj.py();
    if let Ok(mapping) = obj.cast::<PyMapping>() {
        let kwargs = PyDict::new(py);
        kwargs.update(mapping)?;
        let made = py.get_type::<Token>().call((), Some(&kwargs))?;
        return made.cast::<Token>()?.borrow().to_core();
    }
    Err(PyTypeError::new_err(format!(
        "expected a tokenvault.Token or a dict of its fields, got {}",
        obj.get_type().name()?
    )))
}

/// Argon2id parameters from `None`, `"floor"`, `"recommended"`, a dict with `memory_kib`,
/// `iterations` and `parallelism`, or a 3-tuple/list of them in that order.
fn kdf_arg(kdf: Option<&Bound<'_, PyAny>>) -> PyResult<KdfParams> {
    let Some(kdf) = kdf.filter(|k| !k.is_none()) else {
        return Ok(KdfParams::RECOMMENDED);
    };
    if let Ok(name) = kdf.cast::<PyString>() {
        return match name.to_cow()?.as_ref() {
            "floor" => Ok(KdfParams::FLOOR),
            "recommended" => Ok(KdfParams::RECOMMENDED),
            other => Err(PyValueError::new_err(format!(
                "unknown KDF preset {other:?}: use \"floor\", \"recommended\", a dict or a tuple"
            ))),
        };
    }
    let values: Vec<Bound<'_, PyAny>> = if let Ok(d) = kdf.cast::<PyDict>() {
        for key in d.keys() {
            let key: String = key.extract()?;
            if !["memory_kib", "iterations", "parallelism"].contains(&key.as_str()) {
                return Err(PyTypeError::new_err(format!(
                    "unknown KDF parameter {key:?}: use memory_kib, iterations, parallelism"
                )));
            }
        }
        let mut values = Vec::with_capacity(3);
        for key in ["memory_kib", "iterations", "parallelism"] {
            values.push(
                d.get_item(key)?
                    .ok_or_else(|| PyTypeError::new_err(format!("the KDF dict lacks {key:?}")))?,
            );
        }
        values
    } else if let Ok(seq) = kdf.cast::<PyTuple>() {
        seq.iter().collect()
    } else if let Ok(list) = kdf.cast::<pyo3::types::PyList>() {
        list.iter().collect()
    } else {
        return Err(PyTypeError::new_err(
            "kdf must be None, \"floor\", \"recommended\", a dict or a (memory_kib, iterations, parallelism) tuple",
        ));
    };
    if values.len() != 3 {
        return Err(PyTypeError::new_err(
            "kdf tuple must be (memory_kib, iterations, parallelism)",
        ));
    }
    let mut numbers = [0u32; 3];
    for ((value, slot), name) in
        values
            .iter()
            .zip(numbers.iter_mut())
            .zip(["memory_kib", "iterations", "parallelism"])
    {
        if value.is_instance_of::<pyo3::types::PyBool>() {
            return Err(PyTypeError::new_err(format!("{name} must be an int")));
        }
        let n: i128 = value
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("{name} must be an int")))?;
        *slot = u32::try_from(n).map_err(|_| {
            InvalidKdfParams::new_err(format!("{name} is {n}; it must fit in 0..=4294967295"))
        })?;
    }
    let params = KdfParams {
        memory_kib: numbers[0],
        iterations: numbers[1],
        parallelism: numbers[2],
    };
    params.validate().map_err(raise)?;
    Ok(params)
}

/// Where a vault lives: what `create`/`open` were given.
enum Location {
    /// A directory.
    Dir(PathBuf),
    /// An `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` location, as given (the library parses it).
    #[cfg(feature = "etcd")]
    Etcd(String),
}

/// The scheme of an etcd location.
const ETCD_SCHEME: &str = "etcd://";

/// Why a build without the feature `etcd` refuses an etcd location, and how to build one with it.
#[cfg(not(feature = "etcd"))]
const NO_ETCD: &str = "this tokenvault package was built without etcd support, so it cannot use an \
    etcd:// location. Build it with the feature `etcd` (it needs protoc and the protobuf include \
    files, Debian: protobuf-compiler libprotobuf-dev), from a checkout of tokenvault: \
    MATURIN_PEP517_ARGS=\"--features etcd\" pip install ./python";

/// A location given to `create`/`open`: a directory path (str or os.PathLike), or a str
/// starting with `etcd://`.
fn location_arg(location: &Bound<'_, PyAny>) -> PyResult<Location> {
    let path: PathBuf = location.extract().map_err(|_| {
        PyTypeError::new_err(
            "the vault location must be a directory path (str or os.PathLike) or an etcd:// str",
        )
    })?;
    if let Some(at) = path.to_str().filter(|s| s.starts_with(ETCD_SCHEME)) {
        return etcd_location(at);
    }
    if path.to_string_lossy().contains("://") {
        return Err(PyValueError::new_err(
            "not a vault location: give a directory path or etcd://HOST:PORT[,HOST:PORT...]/PREFIX",
        ));
    }
    Ok(Location::Dir(path))
}

#[cfg(feature = "etcd")]
fn etcd_location(at: &str) -> PyResult<Location> {
    Ok(Location::Etcd(at.to_owned()))
}

#[cfg(not(feature = "etcd"))]
fn etcd_location(_at: &str) -> PyResult<Location> {
    Err(PyValueError::new_err(NO_ETCD))
}

/// The deadline of every call to an etcd cluster, from seconds (None: the library's 5 s).
fn timeout_arg(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    let Some(seconds) = timeout else {
        return Ok(None);
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(PyValueError::new_err(format!(
            "timeout must be a positive, finite number of seconds, not {seconds}"
        ))),
    }
}

/// The passphrase, copied into a buffer that is zeroized when dropped.
fn passphrase_arg(passphrase: &Bound<'_, PyAny>) -> PyResult<Zeroizing<String>> {
    let s = passphrase
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("the passphrase must be a str"))?;
    Ok(Zeroizing::new(s.to_cow()?.into_owned()))
}

/// What `Vault.verify` and `Vault.repair` found.
#[pyclass(module = "tokenvault", name = "VerifyReport", frozen)]
struct VerifyReport {
    /// Records that opened and decoded.
    #[pyo3(get)]
    records: usize,
    /// Index entries, in all four indexes.
    #[pyo3(get)]
    index_entries: usize,
    /// One sentence per problem found (never a secret).
    #[pyo3(get)]
    problems: Vec<String>,
    /// The records in the vault's quarantine (set aside by ``repair`` because they did not
    /// open), each named by the token's id when the vault still knew it, else by its slot.
    #[pyo3(get)]
    quarantined: Vec<String>,
    /// The records this call set aside (only ``repair`` sets any aside), named likewise.
    #[pyo3(get)]
    set_aside: Vec<String>,
}

impl From<CoreReport> for VerifyReport {
    fn from(r: CoreReport) -> Self {
        VerifyReport {
            records: r.records,
            index_entries: r.index_entries,
            problems: r.problems.iter().map(ToString::to_string).collect(),
            quarantined: r.quarantined.iter().map(ToString::to_string).collect(),
            set_aside: r.set_aside.iter().map(ToString::to_string).collect(),
        }
    }
}

#[pymethods]
impl VerifyReport {
    /// Whether nothing is wrong.
    fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn __repr__(&self) -> String {
        format!(
            "VerifyReport(records={}, index_entries={}, problems={})",
            self.records,
            self.index_entries,
            self.problems.len()
        )
    }
}

/// An encrypted token vault: sealed records and blind indexes that only the passphrase
/// unlocks, in a directory or (in a build with etcd) under a key prefix of an etcd cluster.
///
/// Open one with ``Vault.create(location, passphrase)`` or ``Vault.open(location,
/// passphrase)``; close it with ``close()`` or a ``with`` block. A directory vault is open
/// in one place at a time: a second open, from this process or another, raises
/// ``VaultLocked``. An etcd vault is shared: any number of processes, on any machines, may
/// have it open at once. Every method may be called from any thread, and runs with the GIL
/// released.
#[pyclass(module = "tokenvault", name = "Vault", frozen)]
struct Vault {
    handle: Mutex<Option<tokenvault::Vault>>,
    location: Location,
}

impl Vault {
    fn slot(&self) -> MutexGuard<'_, Option<tokenvault::Vault>> {
        // A panic cannot happen while the guard is held (only an Option is moved), so a
        // poisoned lock still holds a consistent value.
        self.handle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle to the open vault, or the "closed" error.
    /// The stored token of this user name (`find_token` with only a user name), or None.
    fn by_user(&self, py: Python<'_>, user_name: &str) -> PyResult<Option<OAuthToken>> {
        let query = OAuthToken::default().with_user_name(user_name);
        let vault = self.handle()?;
        py.detach(move || vault.find_token(&query)).map_err(raise)
    }

    fn handle(&self) -> PyResult<tokenvault::Vault> {
        self.slot()
            .clone()
            .ok_or_else(|| Error::new_err("the vault is closed"))
    }

    fn options(
        kdf: Option<&Bound<'_, PyAny>>,
        durable: bool,
        timeout: Option<f64>,
    ) -> PyResult<VaultOptions> {
        let options = VaultOptions::new().kdf(kdf_arg(kdf)?).durable(durable);
        Ok(match timeout_arg(timeout)? {
            Some(t) => options.timeout(t),
            None => options,
        })
    }

    fn wrap(vault: tokenvault::Vault, location: Location) -> Vault {
        Vault {
            handle: Mutex::new(Some(vault)),
            location,
        }
    }

    /// The location as a str: the directory (as ``os.fspath`` gives it) or the etcd location.
    fn location_str<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        match &self.location {
            Location::Dir(path) => {
                let fspath = py.import(intern!(py, "os"))?.getattr(intern!(py, "fspath"))?;
                Ok(fspath.call1((path,))?.cast_into::<PyString>()?)
            }
            #[cfg(feature = "etcd")]
            Location::Etcd(at) => Ok(PyString::new(py, at)),
        }
    }
}

#[pymethods]
impl Vault {
    /// Creates a new vault at ``location``: a directory (missing parents are created), or,
    /// in a build with etcd (``"etcd" in tokenvault.FEATURES``), a str
    /// ``"etcd://HOST:PORT[,HOST:PORT...]/PREFIX"``: a vault under that key prefix of an etcd
    /// cluster, which any number of processes may then open at once.
    ///
    /// ``kdf``: the Argon2id cost, ``"recommended"`` (the default: 64 MiB, t=3, p=4),
    /// ``"floor"`` (19 MiB, t=2, p=1: for tests and small devices), or a dict / tuple of
    /// ``(memory_kib, iterations, parallelism)``. ``durable``: when True (the default) every
    /// save and delete is on disk when it returns; when False writes are buffered and a crash
    /// may lose the last ones (an etcd vault ignores it: every write is acknowledged by a
    /// quorum). ``engine``: the storage engine of a directory vault, ``"sled"`` (the default)
    /// or ``"redb"`` (for vaults larger than the page cache); ``open`` recognises it from the
    /// files. ``timeout``: the deadline of every call to an etcd cluster, in seconds (default
    /// 5); directory vaults ignore it.
    ///
    /// Raises VaultExists (a vault or other files are there; for etcd, anything under the
    /// prefix), InvalidKdfParams, VaultLocked, StorageError (also for an unknown engine, a
    /// malformed etcd location, an etcd cluster out of reach); ValueError for ``engine``
    /// with an etcd location, for an etcd location in a build without etcd, for a bad
    /// ``timeout``.
    #[staticmethod]
    #[pyo3(signature = (location, passphrase, *, kdf=None, durable=true, engine=None, timeout=None))]
    fn create(
        py: Python<'_>,
        location: &Bound<'_, PyAny>,
        passphrase: &Bound<'_, PyAny>,
        kdf: Option<&Bound<'_, PyAny>>,
        durable: bool,
        engine: Option<&str>,
        timeout: Option<f64>,
    ) -> PyResult<Vault> {
        let location = location_arg(location)?;
        let passphrase = passphrase_arg(passphrase)?;
        let options = Self::options(kdf, durable, timeout)?;
        let vault = match &location {
            Location::Dir(path) => {
                let engine: Engine = engine.unwrap_or("sled").parse().map_err(raise)?;
                let options = options.engine(engine);
                py.detach(|| options.create(path, &passphrase))
            }
            #[cfg(feature = "etcd")]
            Location::Etcd(at) => {
                if let Some(engine) = engine {
                    return Err(PyValueError::new_err(format!(
                        "engine={engine:?} names the engine of a directory vault; a vault at an \
                         etcd:// location is always on etcd: leave engine out"
                    )));
                }
                py.detach(|| options.create_at(at, &passphrase))
            }
        }
        .map_err(raise)?;
        Ok(Self::wrap(vault, location))
    }

    /// Opens the vault at ``location`` (a directory, or an ``etcd://`` str as for
    /// ``create``) with its passphrase.
    ///
    /// The vault unlocks with the KDF parameters it was created with; ``kdf`` (default
    /// ``"recommended"``) is what a later ``change_passphrase`` writes, and a vault whose
    /// parameters are weaker is upgraded to it on open. ``durable`` and ``timeout`` as for
    /// ``create``.
    ///
    /// Raises VaultNotFound (nothing is created), VaultLocked (directory vaults only),
    /// WrongPassphrase, Corrupted, InvalidKdfParams, StorageError; ValueError as for
    /// ``create``.
    #[staticmethod]
    #[pyo3(signature = (location, passphrase, *, kdf=None, durable=true, timeout=None))]
    fn open(
        py: Python<'_>,
        location: &Bound<'_, PyAny>,
        passphrase: &Bound<'_, PyAny>,
        kdf: Option<&Bound<'_, PyAny>>,
        durable: bool,
        timeout: Option<f64>,
    ) -> PyResult<Vault> {
        let location = location_arg(location)?;
        let passphrase = passphrase_arg(passphrase)?;
        let options = Self::options(kdf, durable, timeout)?;
        let vault = match &location {
            Location::Dir(path) => py.detach(|| options.open(path, &passphrase)),
            #[cfg(feature = "etcd")]
            Location::Etcd(at) => py.detach(|| options.open_at(at, &passphrase)),
        }
        .map_err(raise)?;
        Ok(Self::wrap(vault, location))
    }

    /// The storage engine that writes the vault: ``"sled"``, ``"redb"`` or ``"etcd"``.
    #[getter]
    fn engine(&self) -> PyResult<&'static str> {
        Ok(self.handle()?.engine().name())
    }

    /// The vault's directory (a pathlib.Path); None for an etcd vault (see ``location``).
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        match &self.location {
            Location::Dir(path) => Some(path.clone()),
            #[cfg(feature = "etcd")]
            Location::Etcd(_) => None,
        }
    }

    /// Where the vault lives, as a str: its directory, or its ``etcd://`` location.
    #[getter]
    fn location<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        self.location_str(py)
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.slot().is_none()
    }

    /// The stored token that ``token`` (a Token or a dict) identifies, or None.
    ///
    /// The first rule that applies decides: a user name finds that user's token; else an
    /// access token without client id and secret finds by access token; else a grant or
    /// refresh token with client id and secret finds by grant token, then by refresh token,
    /// among tokens of that client id. No rule: None (never "the first token").
    ///
    /// Raises Corrupted if the token found fails its checks.
    fn find_token(&self, py: Python<'_>, token: &Bound<'_, PyAny>) -> PyResult<Option<Token>> {
        let query = token_arg(token)?;
        let vault = self.handle()?;
        let found = py.detach(move || vault.find_token(&query)).map_err(raise)?;
        Ok(found.as_ref().map(Token::from_core))
    }

    /// The stored token of this user name, or None: ``find_token({"user_name": user_name})``
    /// without building a query (the lookup the Zoho SDK makes most; ``tokenvault.zoho``
    /// calls it). An empty user name finds nothing.
    ///
    /// Raises Corrupted if the token found fails its checks.
    fn find_token_by_user(&self, py: Python<'_>, user_name: &str) -> PyResult<Option<Token>> {
        Ok(self.by_user(py, user_name)?.as_ref().map(Token::from_core))
    }

    /// ``find_token_by_user`` for ``tokenvault.zoho``: the token's fields as a tuple (id,
    /// user_name, client_id, client_secret, refresh_token, access_token, grant_token,
    /// expiry_time, redirect_url, api_domain), or None. Not part of the API.
    fn _find_token_by_user_fields<'py>(
        &self,
        py: Python<'py>,
        user_name: &str,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.by_user(py, user_name)?
            .map(|t| {
                (
                    t.id(),
                    t.user_name(),
                    t.client_id(),
                    t.client_secret(),
                    t.refresh_token(),
                    t.access_token(),
                    t.grant_token(),
                    t.expiry_time(),
                    t.redirect_url(),
                    t.api_domain(),
                )
                    .into_pyobject(py)
            })
            .transpose()
    }

    /// Saves ``token`` (a Token or a dict): an update of the stored token with the same id,
    /// or else of the one ``find_token`` returns; otherwise an insert with a fresh random id.
    /// On update, fields that are None keep their stored value.
    ///
    /// Returns the token as stored (id included). A Token argument is updated in place and
    /// returned; for a dict a new Token is returned.
    ///
    /// Raises InvalidToken (no grant, refresh or access token; or a user name another token
    /// holds), Corrupted, StorageError.
    fn save_token(&self, py: Python<'_>, token: &Bound<'_, PyAny>) -> PyResult<Py<Token>> {
        let mut core = token_arg(token)?;
        let vault = self.handle()?;
        let core = py
            .detach(move || vault.save_token(&mut core).map(|()| core))
            .map_err(raise)?;
        let stored = Token::from_core(&core);
        if let Ok(t) = token.cast::<Token>() {
            *t.try_borrow_mut()? = stored;
            return Ok(t.clone().unbind());
        }
        Py::new(py, stored)
    }

    /// Deletes the token with this id, and every index entry of it. An unknown id is not
    /// an error.
    fn delete_token(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let id = id.to_owned();
        let vault = self.handle()?;
        py.detach(move || vault.delete_token(&id)).map_err(raise)
    }

    /// Every stored token, in no particular order.
    ///
    /// Raises Corrupted if a record fails its checks (``repair()`` moves such records aside).
    fn get_tokens(&self, py: Python<'_>) -> PyResult<Vec<Token>> {
        let vault = self.handle()?;
        let tokens = py.detach(move || vault.get_tokens()).map_err(raise)?;
        Ok(tokens.iter().map(Token::from_core).collect())
    }

    /// Deletes every token.
    fn delete_tokens(&self, py: Python<'_>) -> PyResult<()> {
        let vault = self.handle()?;
        py.detach(move || vault.delete_tokens()).map_err(raise)
    }

    /// The token with this id, or None.
    fn find_token_by_id(&self, py: Python<'_>, id: &str) -> PyResult<Option<Token>> {
        let id = id.to_owned();
        let vault = self.handle()?;
        let found = py.detach(move || vault.find_token_by_id(&id)).map_err(raise)?;
        Ok(found.as_ref().map(Token::from_core))
    }

    /// Replaces the passphrase (the data key is wrapped again, records are untouched). On
    /// disk when it returns; no copy of the old header is left in the files.
    fn change_passphrase(&self, py: Python<'_>, new_passphrase: &Bound<'_, PyAny>) -> PyResult<()> {
        let new_passphrase = passphrase_arg(new_passphrase)?;
        let vault = self.handle()?;
        py.detach(move || vault.change_passphrase(&new_passphrase))
            .map_err(raise)
    }

    /// Re-encrypts every token under a fresh data key wrapped under ``new_passphrase``: for a
    /// suspected leak. One atomic write: after a crash the vault opens with exactly one of
    /// the two passphrases, with every token.
    ///
    /// Raises Corrupted (nothing is changed) if a record fails its checks. On an etcd vault,
    /// other processes' writes wait for it; a Vault that another process opened before it
    /// then raises WrongPassphrase until opened again with the new passphrase.
    fn rekey(&self, py: Python<'_>, new_passphrase: &Bound<'_, PyAny>) -> PyResult<()> {
        let new_passphrase = passphrase_arg(new_passphrase)?;
        let vault = self.handle()?;
        py.detach(move || vault.rekey(&new_passphrase)).map_err(raise)
    }

    /// Opens every record and checks every index entry; changes nothing. Damage is
    /// reported in the result, not raised.
    fn verify(&self, py: Python<'_>) -> PyResult<VerifyReport> {
        let vault = self.handle()?;
        let report = py.detach(move || vault.verify()).map_err(raise)?;
        Ok(report.into())
    }

    /// Moves every record that does not open into the vault's quarantine (its bytes kept,
    /// out of every index, listed in ``set_aside``) and rebuilds the indexes from the
    /// records that open. A record that opens is never changed or removed. Afterwards
    /// ``get_tokens`` and ``verify`` are clean. Returns the ``verify`` report after the
    /// repair. On an etcd vault, other processes' writes wait for it, as for ``rekey``.
    fn repair(&self, py: Python<'_>) -> PyResult<VerifyReport> {
        let vault = self.handle()?;
        let report = py.detach(move || vault.repair()).map_err(raise)?;
        Ok(report.into())
    }

    /// Rewrites the vault into fresh storage and removes the old files, so that no deleted
    /// token, no earlier version of a token and no earlier header can be decrypted from
    /// the vault's files. Crash-safe. ``change_passphrase`` and ``rekey`` do this by
    /// themselves. On an etcd vault it does nothing: etcd keeps earlier values in its own
    /// history until the cluster compacts it (run etcd with auto-compaction).
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        let vault = self.handle()?;
        py.detach(move || vault.compact()).map_err(raise)
    }

    /// Writes every buffered change to disk (only needed with ``durable=False``).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let vault = self.handle()?;
        py.detach(move || vault.flush()).map_err(raise)
    }

    /// Flushes and closes the vault, releasing its lock (once calls still running in other
    /// threads return). Closing twice is harmless; any other method then raises Error.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(vault) = self.slot().take() else {
            return Ok(());
        };
        py.detach(move || {
            let flushed = vault.flush();
            drop(vault);
            flushed
        })
        .map_err(raise)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let location = self.location_str(py)?.repr()?;
        let state = if self.closed() { "closed" } else { "open" };
        Ok(format!("<tokenvault.Vault {location} {state}>"))
    }
}

/// The optional parts this build includes (`tokenvault.FEATURES`): the redb engine always,
/// etcd locations with the feature `etcd`.
const FEATURES: &[&str] = &[
    "redb",
    #[cfg(feature = "etcd")]
    "etcd",
];

/// The native half of the `tokenvault` package; import `tokenvault` instead.
#[pymodule]
mod _native {
    use super::*;

    #[pymodule_export]
    use super::{Token, Vault, VerifyReport};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        m.add("Error", py.get_type::<Error>())?;
        m.add("WrongPassphrase", py.get_type::<WrongPassphrase>())?;
        m.add("Corrupted", py.get_type::<Corrupted>())?;
        m.add("InvalidToken", py.get_type::<InvalidToken>())?;
        m.add("VaultExists", py.get_type::<VaultExists>())?;
        m.add("VaultNotFound", py.get_type::<VaultNotFound>())?;
        m.add("VaultLocked", py.get_type::<VaultLocked>())?;
        m.add("InvalidKdfParams", py.get_type::<InvalidKdfParams>())?;
        m.add("StorageError", py.get_type::<StorageError>())?;
        m.add(intern!(py, "TOKEN_FIELDS"), PyTuple::new(py, FIELDS)?)?;
        m.add("KDF_FLOOR", kdf_tuple(py, KdfParams::FLOOR)?)?;
        m.add("KDF_RECOMMENDED", kdf_tuple(py, KdfParams::RECOMMENDED)?)?;
        m.add("KDF_CEILING", kdf_tuple(py, KdfParams::CEILING)?)?;
        m.add("FEATURES", PyTuple::new(py, FEATURES)?)?;
        Ok(())
    }

    fn kdf_tuple(py: Python<'_>, k: KdfParams) -> PyResult<Bound<'_, PyTuple>> {
        PyTuple::new(py, [k.memory_kib, k.iterations, k.parallelism])
    }
}
