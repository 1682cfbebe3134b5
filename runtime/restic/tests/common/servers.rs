//! Real storage servers on loopback ports: restic's rest-server and MinIO
//! (an S3-compatible server), built from their Go modules by
//! `tests/objectstore/install.sh` (cached after the first build), each
//! started with its data in a temporary directory and stopped on drop.
//! No mocks: what the backends talk to is what users run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// MinIO's root user, the test's S3 credentials.
pub const S3_ACCESS_KEY: &str = "wasmover-test";
pub const S3_SECRET_KEY: &str = "wasmover-test-secret";

/// The two server binaries, from `$REST_SERVER` and `$MINIO` when both are
/// set, else from `tests/objectstore/install.sh` (which builds them the
/// first time). Panics, failing the test, when they cannot be had.
fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINARIES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINARIES.get_or_init(|| {
        if let (Some(rest), Some(minio)) = (std::env::var_os("REST_SERVER"), std::env::var_os("MINIO")) {
            return (rest.into(), minio.into());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/objectstore/install.sh");
        let out = Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e})", script.display()));
        assert!(
            out.status.success(),
            "tests/objectstore/install.sh failed (it builds rest-server and MinIO with go from the Go module proxy; scripts/setup runs it):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let get = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("install.sh printed no {key}: {stdout}"))
        };
        (get("REST_SERVER="), get("MINIO="))
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `GET path` on `addr` answers with one of `statuses`.
fn answers(addr: &str, path: &str, statuses: &[&str]) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && statuses.iter().any(|s| head.ends_with(s.as_bytes()))
}

/// A certificate authority and a server certificate for 127.0.0.1 it
/// signed, as PEM: (CA certificate, server certificate, server key).
pub fn tls_files() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let pem = |label: &str, der: &[u8]| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmover test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        pem("CERTIFICATE", ca_cert.der()),
        pem("CERTIFICATE", cert.der()),
        pem("PRIVATE KEY", &key.serialize_der()),
    )
}

/// A server process on a fixed port and data directory, which a test may
/// kill and start again.
struct Process {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    name: &'static str,
}

impl Process {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    fn spawn(&mut self, mut command: Command, ready: impl Fn(&str) -> bool) {
        self.kill();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(&self.addr()) {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{} did not answer on {} ({exited:?}): {}",
                self.name,
                self.addr(),
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server at once (SIGKILL: no clean shutdown), keeping its data.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// restic's rest-server serving a temporary directory.
pub struct RestServer {
    process: Process,
    auth: Option<(String, String)>,
    tls: Option<PathBuf>,
}

impl RestServer {
    /// A server that asks for no credentials.
    pub fn start() -> RestServer {
        RestServer::launch(None, false)
    }

    /// A server that requires `user`:`password` (an htpasswd file made by
    /// `htpasswd -B`, which scripts/setup installs).
    pub fn start_with_auth(user: &str, password: &str) -> RestServer {
        RestServer::launch(Some((user.into(), password.into())), false)
    }

    /// A server on HTTPS with a certificate from [`tls_files`]; returns the
    /// CA certificate (PEM) too.
    pub fn start_tls() -> (RestServer, String) {
        let server = RestServer::launch(None, true);
        let ca = std::fs::read_to_string(server.tls.as_ref().unwrap().join("ca.pem")).unwrap();
        (server, ca)
    }

    fn launch(auth: Option<(String, String)>, tls: bool) -> RestServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        if let Some((user, password)) = &auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd runs (scripts/setup installs apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
        }
        let tls = tls.then(|| {
            let (ca, cert, key) = tls_files();
            let tls_dir = dir.path().join("tls");
            std::fs::create_dir(&tls_dir).unwrap();
            std::fs::write(tls_dir.join("ca.pem"), ca).unwrap();
            std::fs::write(tls_dir.join("cert.pem"), cert).unwrap();
            std::fs::write(tls_dir.join("key.pem"), key).unwrap();
            tls_dir
        });
        let mut server = RestServer {
            process: Process {
                dir,
                port: free_port(),
                child: None,
                name: "rest-server",
            },
            auth,
            tls,
        };
        server.restart();
        server
    }

    /// Starts the server (again, after [`RestServer::kill`]) on the same
    /// port and data, and waits until it answers.
    pub fn restart(&mut self) {
        let dir = self.process.dir.path();
        let mut command = Command::new(&binaries().0);
        command
            .arg("--path")
            .arg(dir.join("data"))
            .args(["--listen", &self.process.addr()]);
        match &self.auth {
            Some(_) => command.arg("--htpasswd-file").arg(dir.join("htpasswd")),
            None => command.arg("--no-auth"),
        };
        if let Some(tls) = &self.tls {
            command
                .arg("--tls")
                .arg("--tls-cert")
                .arg(tls.join("cert.pem"))
                .arg("--tls-key")
                .arg(tls.join("key.pem"));
        }
        let tls = self.tls.is_some();
        // Any HTTP answer will do (401 with auth, 404 for /); with TLS, a connection.
        self.process.spawn(command, |addr| {
            if tls {
                TcpStream::connect(addr).is_ok()
            } else {
                answers(addr, "/", &["200", "401", "404", "405"])
            }
        });
    }

    /// Kills the server (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// `rest:http://[user:password@]127.0.0.1:<port>/<path>`, as restic takes it.
    pub fn repository(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let auth = match &self.auth {
            Some((u, p)) => format!("{u}:{p}@"),
            None => String::new(),
        };
        format!("rest:{scheme}://{auth}{}/{path}", self.process.addr())
    }

    /// The directory in which the server keeps the repository `path`.
    pub fn data(&self, path: &str) -> PathBuf {
        self.process.dir.path().join("data").join(path)
    }
}

/// MinIO, an S3-compatible server, on a temporary directory.
pub struct S3Server {
    process: Process,
}

impl S3Server {
    /// A server whose root user is [`S3_ACCESS_KEY`] / [`S3_SECRET_KEY`].
    pub fn start() -> S3Server {
        let mut server = S3Server {
            process: Process {
                dir: tempfile::tempdir().unwrap(),
                port: free_port(),
                child: None,
                name: "minio",
            },
        };
        server.restart();
        server
    }

    /// Starts the server (again, after [`S3Server::kill`]) on the same port
    /// and data, and waits until it is ready.
    pub fn restart(&mut self) {
        let dir = self.process.dir.path();
        let mut command = Command::new(&binaries().1);
        command
            .arg("server")
            .arg(dir.join("data"))
            .args(["--address", &self.process.addr()])
            .args(["--console-address", &format!("127.0.0.1:{}", free_port())])
            .arg("--quiet")
            .env("MINIO_ROOT_USER", S3_ACCESS_KEY)
            .env("MINIO_ROOT_PASSWORD", S3_SECRET_KEY)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .env("HOME", dir);
        self.process.spawn(command, |addr| {
            answers(addr, "/minio/health/ready", &["200"])
        });
    }

    /// Kills the server (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.process.addr())
    }

    /// `s3:http://127.0.0.1:<port>/<bucket_and_prefix>`, as restic takes it.
    pub fn repository(&self, bucket_and_prefix: &str) -> String {
        format!("s3:{}/{bucket_and_prefix}", self.endpoint())
    }

    /// The server's credentials as restic's environment has them.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ]
    }
}
