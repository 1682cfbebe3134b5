//! Connections over real loopback sockets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::hello::{self, MAX_VERSION, MIN_VERSION};
use crate::stream::Connection;
use crate::{Listener, NetError, Options, Psk, connect, tls};

fn psk(byte: u8) -> Psk {
    Psk::from_bytes(&[byte; 32]).unwrap()
}

fn quick() -> Options {
    Options {
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        ..Options::default()
    }
}

/// Connects a client with `client_key` to a listener with `server_key`;
/// returns both outcomes.
fn pair(
    server_key: Psk,
    client_key: Psk,
    options: Options,
) -> (Result<Connection, NetError>, Result<Connection, NetError>) {
    let listener = Listener::bind("127.0.0.1:0", &server_key, options).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || listener.accept().map(|(c, _)| c));
    let client = connect(&addr, &client_key, &options);
    (server.join().unwrap(), client)
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn both_ends_write_large_amounts_at_once_without_deadlock() {
    let (server, client) = pair(psk(1), psk(1), Options::default());
    let (server, client) = (server.unwrap(), client.unwrap());
    assert_eq!(
        (server.version(), client.version()),
        (MAX_VERSION, MAX_VERSION)
    );
    let len = 24 << 20;
    let data = pseudo_random(len, 3);
    let started = Instant::now();
    // Each end writes everything before reading anything: only buffers
    // between them, no lock held while waiting, let this finish.
    let ends: Vec<_> = [server, client]
        .into_iter()
        .map(|conn| {
            let data = data.clone();
            thread::spawn(move || {
                let mut writer = conn.writer();
                let sent = data.clone();
                let writing = thread::spawn(move || {
                    writer.write_all(&sent).unwrap();
                    writer.flush().unwrap();
                });
                let mut got = vec![0; data.len()];
                conn.reader().read_exact(&mut got).unwrap();
                writing.join().unwrap();
                assert!(got == data, "bytes arrive unchanged and in order");
                conn.finish().unwrap();
                conn.wire_bytes()
            })
        })
        .collect();
    for end in ends {
        let (wire_in, wire_out) = end.join().unwrap();
        assert!(wire_in > len as u64 && wire_out > len as u64);
        assert!(wire_out < len as u64 + len as u64 / 50, "TLS overhead");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} MiB each way at once in {secs:.2}s: {:.0} MiB/s per direction",
        len >> 20,
        (len >> 20) as f64 / secs
    );
}

/// One thread per end, as an agent runs: each writes 32 MiB before it
/// reads, far beyond the kernel's buffers. Without reading ahead while a
/// write waits, both would wait until the idle timeout.
#[test]
fn ends_that_both_write_before_reading_do_not_wait_for_each_other() {
    let options = Options {
        idle_timeout: Duration::from_secs(5),
        ..Options::default()
    };
    let (server, client) = pair(psk(1), psk(1), options);
    let len = 32 << 20;
    let ends = [server.unwrap(), client.unwrap()].map(|conn| {
        thread::spawn(move || -> std::io::Result<()> {
            let data = pseudo_random(len, 9);
            let mut writer = conn.writer();
            writer.write_all(&data)?;
            writer.flush()?;
            let mut got = vec![0; len];
            conn.reader().read_exact(&mut got)?;
            assert!(got == data, "bytes arrive unchanged and in order");
            conn.finish()
        })
    });
    for end in ends {
        end.join().unwrap().unwrap();
    }
}

#[test]
fn a_wrong_key_is_refused_by_both_ends() {
    let (server, client) = pair(psk(1), psk(2), quick());
    assert!(
        matches!(server, Err(NetError::From {  ref cause, .. }) if matches!(**cause, NetError::AuthenticationFailed)),
        "{server:?}"
    );
    let client = client.unwrap_err();
    assert!(matches!(client, NetError::AuthenticationFailed), "{client}");
    assert!(
        client
            .to_string()
            .contains("peer failed pre-shared-key authentication")
    );
}

/// A relay that terminates TLS on each side and passes the greetings on
/// unchanged: each end's proof covers its own leg's exporter, so neither
/// accepts the other's.
#[test]
fn a_tls_terminating_relay_cannot_pass_on_the_proofs() {
    let key = psk(5);
    let listener = Listener::bind("127.0.0.1:0", &key, quick()).unwrap();
    let server_addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || listener.accept().map(|_| ()));
    let relay_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay_listener.local_addr().unwrap().to_string();
    let relay = thread::spawn(move || {
        let (mut down_tcp, _) = relay_listener.accept().unwrap();
        let mut down = rustls::ServerConnection::new(tls::server_config().unwrap()).unwrap();
        let mut up_tcp = TcpStream::connect(server_addr).unwrap();
        let rustls::Connection::Client(mut up) = tls::client(&quick()).unwrap() else {
            unreachable!("a client connection")
        };
        let mut down = rustls::Stream::new(&mut down, &mut down_tcp);
        let mut up = rustls::Stream::new(&mut up, &mut up_tcp);
        let mut greeting = [0; hello::LEN];
        down.read_exact(&mut greeting).unwrap();
        up.write_all(&greeting).unwrap();
        up.flush().unwrap();
        up.read_exact(&mut greeting).unwrap();
        down.write_all(&greeting).unwrap();
        down.flush().unwrap();
    });
    let client = connect(&relay_addr, &key, &quick()).unwrap_err();
    assert!(matches!(client, NetError::AuthenticationFailed), "{client}");
    let server = server.join().unwrap().unwrap_err();
    assert!(
        server
            .to_string()
            .contains("peer failed pre-shared-key authentication")
    );
    relay.join().unwrap();
}

#[test]
fn ends_without_a_common_version_say_which_versions_each_speaks() {
    let key = psk(3);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let server_key = key.clone();
    let newer = thread::spawn(move || {
        let (stream, _) = tcp.accept().unwrap();
        let conn = rustls::ServerConnection::new(tls::server_config().unwrap()).unwrap();
        Connection::establish_speaking(
            stream,
            conn.into(),
            &server_key,
            &quick(),
            Instant::now(),
            (MAX_VERSION + 1, MAX_VERSION + 2),
        )
    });
    let older = connect(&addr, &key, &quick()).unwrap_err();
    let newer = newer.join().unwrap().unwrap_err();
    for e in [&older, &newer] {
        assert!(matches!(e, NetError::Version { .. }), "{e}");
    }
    assert_eq!(
        older.to_string(),
        format!(
            "the peer speaks agent protocol versions {}..={}, this agent {MIN_VERSION}..={MAX_VERSION}; upgrade the older agent",
            MAX_VERSION + 1,
            MAX_VERSION + 2
        )
    );
}

/// A build of protocol 7 cannot read compressed messages: it is refused
/// at the greeting, never sent one it would misread.
#[test]
fn a_peer_of_protocol_7_is_refused_before_anything_moves() {
    assert_eq!((MIN_VERSION, MAX_VERSION), (8, 8));
    let key = psk(4);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let server_key = key.clone();
    let older = thread::spawn(move || {
        let (stream, _) = tcp.accept().unwrap();
        let conn = rustls::ServerConnection::new(tls::server_config().unwrap()).unwrap();
        Connection::establish_speaking(
            stream,
            conn.into(),
            &server_key,
            &quick(),
            Instant::now(),
            (7, 7),
        )
    });
    let newer = connect(&addr, &key, &quick()).unwrap_err();
    assert!(older.join().unwrap().is_err());
    assert_eq!(
        newer.to_string(),
        "the peer speaks agent protocol versions 7..=7, this agent 8..=8; upgrade the older agent"
    );
}

#[test]
fn a_silent_peer_times_out_in_the_handshake() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let silent = thread::spawn(move || tcp.accept().unwrap());
    let started = Instant::now();
    let e = connect(&addr, &psk(1), &quick()).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, NetError::HandshakeTimeout { .. }), "{e}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
    drop(silent.join());

    // A listener whose client connects and says nothing.
    let listener = Listener::bind("127.0.0.1:0", &psk(1), quick()).unwrap();
    let _quiet = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let e = listener.accept().unwrap_err();
    assert!(
        e.to_string().contains("did not complete the TLS handshake"),
        "{e}"
    );
}

#[test]
fn a_peer_that_stops_sending_times_out_and_a_cut_connection_is_not_an_end() {
    let (server, client) = pair(psk(1), psk(1), quick());
    let (server, client) = (server.unwrap(), client.unwrap());
    let started = Instant::now();
    let e = server.reader().read(&mut [0; 10]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Bytes, then the socket closes without a TLS close.
    client.writer().write_all(b"partial").unwrap();
    client.writer().flush().unwrap();
    drop(client);
    let mut got = Vec::new();
    let e = server.reader().read_to_end(&mut got).unwrap_err();
    assert_eq!(got, b"partial");
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
}

#[test]
fn the_bandwidth_limit_paces_writes() {
    let rate = 8 << 20;
    let options = Options {
        rate_limit: Some(rate),
        ..Options::default()
    };
    let (server, client) = pair(psk(1), psk(1), options);
    let (server, client) = (server.unwrap(), client.unwrap());
    let len = 4 << 20;
    let reading = thread::spawn(move || {
        let mut got = vec![0; len];
        server.reader().read_exact(&mut got).unwrap();
    });
    let started = Instant::now();
    client.writer().write_all(&vec![7; len]).unwrap();
    client.writer().flush().unwrap();
    reading.join().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let expected = len as f64 / rate as f64;
    assert!(
        secs > expected * 0.85 && secs < expected * 4.0,
        "{secs:.2}s for {expected:.2}s"
    );
}

#[test]
fn key_material_is_hex_or_raw_and_at_least_32_bytes() {
    let hex: String = (0..32).map(|i| format!("{i:02x}")).collect();
    let raw: Vec<u8> = (0..32).collect();
    let from_hex = Psk::from_bytes(format!("{hex}\n").as_bytes()).unwrap();
    let from_raw = Psk::from_bytes(&raw).unwrap();
    assert_eq!(from_hex.prove(b"x"), from_raw.prove(b"x"));
    assert_ne!(from_hex.prove(b"x"), psk(0).prove(b"x"));
    let short = Psk::from_bytes(&hex.as_bytes()[..62]).unwrap_err();
    assert!(
        short.contains("31 bytes of key material, at least 32"),
        "{short}"
    );

    let dir = std::env::temp_dir().join(format!("wasmover-net-key-{}", std::process::id()));
    std::fs::write(&dir, &hex).unwrap();
    assert_eq!(
        Psk::from_file(&dir).unwrap().prove(b"x"),
        from_raw.prove(b"x")
    );
    std::fs::remove_file(&dir).unwrap();
    let e = Psk::from_file(&dir).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("key file {}: ", dir.display())),
        "{e}"
    );
}
