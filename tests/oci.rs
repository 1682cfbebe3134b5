//! Modules as OCI artifacts against a real registry: Debian's
//! `docker-registry` (the CNCF distribution registry), started per test on
//! a loopback port with its storage in a temporary directory.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use wasmover_host::Capability;
use wasmover_oci::{
    Credentials, Digest, ModuleRef, ModuleStore, OciError, Registry, RegistryAuth, WasmConfig,
};
use wasmover_operator::modules::Oci;
use wasmover_tests::registry::TestRegistry;

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(wasmover_tests::guest(name)).unwrap()
}

fn reference(s: &str) -> ModuleRef {
    s.parse().unwrap()
}

fn client(store: &Path) -> Registry {
    Registry::new(ModuleStore::new(store))
}

/// Pushes `module` with a config naming nothing (what the registry sees
/// is the same layout as `wasmover push`'s).
async fn push_raw(registry: &Registry, to: &str, module: &[u8], auth: &RegistryAuth) -> Digest {
    let config = WasmConfig::component(&Digest::of(module), vec![], vec![]);
    registry
        .push(&reference(to), module, &config, auth)
        .await
        .unwrap_or_else(|e| panic!("push to {to}: {e}"))
}

/// A plain HTTP/1.0 GET against the registry; the body.
fn http_get(addr: &str, path: &str, accept: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]);
    assert!(head.split(' ').nth(1) == Some("200"), "GET {path}: {head}");
    response[split + 4..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_round_trip_pinned_by_digest_with_tags_resolved() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let engine = wasmover_tests::engine();
    let oci = Oci::new(
        ModuleStore::new(dir.path().join("a")),
        false,
        Credentials::default(),
    );
    let tag = registry.reference("movers/blocksync:v1");
    let blocksync = bytes("blocksync");
    let digest = oci
        .push(
            &engine,
            &wasmover_tests::guest("blocksync"),
            &reference(&tag),
        )
        .await
        .unwrap();
    // The manifest is deterministic: the same module pushes to the same digest.
    let again = oci
        .push(
            &engine,
            &wasmover_tests::guest("blocksync"),
            &reference(&tag),
        )
        .await
        .unwrap();
    assert_eq!(again, digest);

    // The CNCF wasm layout, as other tools read it.
    let manifest: serde_json::Value = serde_json::from_slice(&http_get(
        &registry.addr(),
        "/v2/movers/blocksync/manifests/v1",
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], Digest::of(&blocksync).to_string());
    let config: serde_json::Value = serde_json::from_slice(&http_get(
        &registry.addr(),
        &format!(
            "/v2/movers/blocksync/blobs/{}",
            manifest["config"]["digest"].as_str().unwrap()
        ),
        "*/*",
    ))
    .unwrap();
    assert_eq!(config["architecture"], "wasm");
    let exports = config["component"]["exports"].as_array().unwrap();
    assert!(exports.iter().any(|e| e == "wasmover:mover/control@0.3.0"));
    let imports = config["component"]["imports"].as_array().unwrap();
    assert!(imports.iter().any(|e| e == "wasmover:mover/blocks@0.3.0"));

    // Pull by tag: the tag resolves to the pushed manifest.
    let by_tag = client(&dir.path().join("b"))
        .fetch(&reference(&tag), &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(by_tag.manifest, digest);
    assert_eq!(by_tag.module, Digest::of(&blocksync));
    assert_eq!(by_tag.bytes, blocksync);
    assert!(!by_tag.from_cache);
    assert_eq!(by_tag.reference.to_string(), format!("{tag}@{digest}"));
    let module = wasmover_operator::modules::load(&engine, &by_tag).unwrap();
    assert_eq!(module.name(), "blocksync");
    assert!(module.has(Capability::Control) && module.has(Capability::Transfer));

    // The tag moves to another module; the digest still names the first.
    let other = push_raw(
        oci.registry(),
        &tag,
        &bytes("hostile"),
        &RegistryAuth::Anonymous,
    )
    .await;
    assert_ne!(other, digest);
    let moved = client(&dir.path().join("b"))
        .fetch(&reference(&tag), &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!((moved.manifest, moved.bytes), (other, bytes("hostile")));
    let pinned = client(&dir.path().join("c"))
        .fetch(
            &reference(&format!("{tag}@{digest}")),
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap();
    assert_eq!(pinned.bytes, blocksync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_is_refused_and_nothing_is_cached() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let blocksync = bytes("blocksync");
    let repo = registry.reference("movers/blocksync");
    let digest = push_raw(
        &client(&dir.path().join("push")),
        &format!("{repo}:v1"),
        &blocksync,
        &RegistryAuth::Anonymous,
    )
    .await;

    // A digest the registry does not have.
    let unknown = Digest::of(b"no such manifest");
    let e = client(&dir.path().join("a"))
        .fetch(
            &reference(&format!("{repo}@{unknown}")),
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("was not found"), "{e}");

    // The registry serves a manifest that is not the one pinned.
    let pinned = reference(&format!("{repo}@{digest}"));
    let manifest_file = registry.blob_file(digest.as_str());
    let original = std::fs::read(&manifest_file).unwrap();
    let tampered = String::from_utf8(original.clone())
        .unwrap()
        .replace("application/wasm", "application/wasX");
    std::fs::write(&manifest_file, tampered).unwrap();
    let store = dir.path().join("b");
    let e = client(&store)
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::DigestMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("expected digest {digest}")),
        "{e}"
    );
    std::fs::write(&manifest_file, &original).unwrap();

    // The registry serves other bytes for the module.
    let module = Digest::of(&blocksync);
    let mut flipped = blocksync.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    std::fs::write(registry.blob_file(module.as_str()), &flipped).unwrap();
    let e = client(&store)
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(e, OciError::DigestMismatch { .. }) && e.to_string().contains(module.as_str()),
        "{e}"
    );
    // Nothing refused was kept.
    let kept = ModuleStore::new(&store);
    assert!(!kept.path(&module).exists() && !kept.path(&digest).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_auth_refuses_anonymous_and_wrong_credentials() {
    let registry = TestRegistry::start_with_auth("mover", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let blocksync = bytes("blocksync");
    let to = reference(&registry.reference("movers/blocksync:v1"));
    let config = WasmConfig::component(&Digest::of(&blocksync), vec![], vec![]);
    let docker_config = |user: &str, password: &str| {
        let path = dir.path().join(format!("{user}-{password}.json"));
        let auth = format!("{user}:{password}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(auth);
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"http://{}": {{"auth": "{encoded}"}}}}}}"#,
                registry.addr()
            ),
        )
        .unwrap();
        Credentials::from_file(&path)
            .unwrap()
            .for_registry(&registry.addr())
    };
    let registry_client = client(&dir.path().join("store"));

    for auth in [RegistryAuth::Anonymous, docker_config("mover", "wrong")] {
        let e = registry_client
            .push(&to, &blocksync, &config, &auth)
            .await
            .unwrap_err();
        assert!(matches!(e, OciError::Unauthorized { .. }), "{auth:?}: {e}");
        assert!(e.to_string().starts_with("not authorized for"), "{e}");
    }
    let good = docker_config("mover", "s3cret");
    let digest = registry_client
        .push(&to, &blocksync, &config, &good)
        .await
        .unwrap();
    let e = client(&dir.path().join("anonymous"))
        .fetch(&to, &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Unauthorized { .. }), "{e}");
    let pulled = client(&dir.path().join("authorized"))
        .fetch(&to, &good)
        .await
        .unwrap();
    assert_eq!((pulled.manifest, pulled.bytes), (digest, blocksync));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_registry_is_a_clear_error_and_pinned_modules_come_from_the_store() {
    let mut registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let blocksync = bytes("blocksync");
    let tag = registry.reference("movers/blocksync:v1");
    let store = client(&dir.path().join("store"));
    let digest = push_raw(&store, &tag, &blocksync, &RegistryAuth::Anonymous).await;
    let pinned = reference(&format!("{tag}@{digest}"));
    store
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap();

    registry.stop();
    let cached = store
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert!(cached.from_cache);
    assert_eq!(cached.bytes, blocksync);
    let e = client(&dir.path().join("empty"))
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach registry {}", registry.addr())),
        "{e}"
    );
    // A tag always asks the registry.
    let e = store
        .fetch(&reference(&tag), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Unreachable { .. }), "{e}");
}

/// Forwards connections to the registry; once `limit` bytes of responses
/// went through one connection, stops the registry and cuts the
/// connection: the registry dies mid-transfer. It holds the registry
/// weakly, so that the test's drop still stops it for good.
fn cutting_proxy(registry: &Arc<Mutex<TestRegistry>>, limit: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream_addr = registry.lock().unwrap().addr();
    let registry = Arc::downgrade(registry);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut upstream) = TcpStream::connect(&upstream_addr) else {
                continue;
            };
            let (mut client_reader, mut upstream_writer) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut client_reader, &mut upstream_writer));
            let registry = registry.clone();
            std::thread::spawn(move || {
                if wasmover_tests::tamper::pump(&mut upstream, &mut client, limit, None)
                    && let Some(registry) = registry.upgrade()
                {
                    registry.lock().unwrap().stop();
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_stopped_mid_pull_leaves_nothing_in_the_store() {
    let registry = Arc::new(Mutex::new(TestRegistry::start()));
    let dir = tempfile::tempdir().unwrap();
    let blocksync = bytes("blocksync");
    let direct = registry.lock().unwrap().reference("movers/blocksync:v1");
    let digest = push_raw(
        &client(&dir.path().join("push")),
        &direct,
        &blocksync,
        &RegistryAuth::Anonymous,
    )
    .await;
    // Manifests and the API check are a few hundred bytes; the module is
    // ~270 KiB: 64 KiB cuts the module's transfer.
    let proxy = cutting_proxy(&registry, 64 << 10);
    let through_proxy = reference(&format!("oci://{proxy}/movers/blocksync@{digest}"));
    let store_dir = dir.path().join("store");
    let e = client(&store_dir)
        .fetch(&through_proxy, &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Transfer { .. }), "{e}");
    assert!(e.to_string().contains("nothing was cached"), "{e}");
    let store = ModuleStore::new(&store_dir);
    assert!(!store.path(&Digest::of(&blocksync)).exists());
    assert!(!store.path(&digest).exists());

    // Back up: the same pull completes and is verified.
    registry.lock().unwrap().restart();
    let pinned = reference(&format!("{direct}@{digest}"));
    let pulled = client(&store_dir)
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(pulled.bytes, blocksync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_over_the_size_limit_are_refused_before_download() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let blocksync = bytes("blocksync");
    let tag = registry.reference("movers/blocksync:v1");
    push_raw(
        &client(&dir.path().join("push")),
        &tag,
        &blocksync,
        &RegistryAuth::Anonymous,
    )
    .await;
    let small = Registry::new(ModuleStore::new(dir.path().join("small")).with_max_bytes(100_000));
    let e = small
        .fetch(&reference(&tag), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(e, OciError::TooLarge { size, limit: 100_000, .. } if size == blocksync.len() as u64),
        "{e}"
    );
    assert!(!dir.path().join("small").exists());
    let config = WasmConfig::component(&Digest::of(&blocksync), vec![], vec![]);
    let e = small
        .push(
            &reference(&tag),
            &blocksync,
            &config,
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::TooLarge { .. }), "{e}");
}

fn wasmover(args: &[&str], home: &Path) -> Output {
    Command::new(wasmover_tests::wasmover_bin())
        .args(args)
        .env("WASMOVER_CACHE_DIR", home.join("precompiled"))
        .env("WASMOVER_MODULE_STORE", home.join("modules"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn the_cli_pushes_pulls_inspects_and_replicates_with_an_oci_module() {
    let mut registry = TestRegistry::start();
    let home = tempfile::tempdir().unwrap();
    let guest = wasmover_tests::guest("blocksync");
    let tag = registry.reference("movers/blocksync:v1");

    let digest = stdout(&wasmover(
        &["push", guest.to_str().unwrap(), &tag],
        home.path(),
    ));
    let digest: Digest = digest.trim().parse().unwrap();
    let pinned = format!("{tag}@{digest}");
    let pulled = stdout(&wasmover(&["pull", &tag], home.path()));
    assert_eq!(pulled.trim(), pinned);

    let inspect = stdout(&wasmover(&["inspect", &pinned], home.path()));
    for line in [
        "module:    blocksync",
        "version:   blocksync 0.1.0 (built against contract 0.3.0)",
        &format!("reference: {pinned}"),
        &format!("digest:    {}", Digest::of(&std::fs::read(&guest).unwrap())),
        "contract:  wasmover:mover@0.3.0",
        "exports:   wasmover:mover/control@0.3.0 wasmover:mover/transfer@0.3.0",
        "optional:  wasmover:mover/validate@0.3.0",
        "  wasmover:mover/blocks@0.3.0",
    ] {
        assert!(inspect.contains(line), "{line:?} not in\n{inspect}");
    }
    let local = stdout(&wasmover(
        &["inspect", guest.to_str().unwrap()],
        home.path(),
    ));
    assert!(local.contains("size:      "), "{local}");

    // The registry is gone: the pinned module still replicates, from the store.
    registry.stop();
    let (src, dst) = (home.path().join("src"), home.path().join("dst"));
    wasmover_tests::make_tree(&src, 300_000);
    let out = stdout(&wasmover(
        &[
            "replicate",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
            "--mover",
            &pinned,
        ],
        home.path(),
    ));
    assert!(out.contains("with blocksync"), "{out}");
    wasmover_tests::assert_same_tree(&src, &dst);

    // A tag needs the registry: one clear line and a failure.
    let out = wasmover(&["pull", &tag], home.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "wasmover: cannot reach registry {}",
            registry.addr()
        )),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let wat = Path::new(env!("CARGO_MANIFEST_DIR")).join("modules/empty.wat");
    let out = wasmover(&["push", wat.to_str().unwrap(), &tag], home.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is not a binary WebAssembly component"),
        "{err}"
    );
    let out = wasmover(&["pull", "oci://registry.example/Bad"], home.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not a module reference"), "{err}");
}
