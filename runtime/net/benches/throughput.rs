//! One-way throughput over loopback: a wasmover-net connection (TLS 1.3,
//! AES-GCM or ChaCha20 as rustls negotiates) against a plain TCP socket in
//! the same run, median of several runs each.
//!
//! `cargo bench -p wasmover-net --bench throughput [-- MIB RUNS]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use wasmover_net::{Listener, Options, Psk, connect};

const CHUNK: usize = 256 << 10;

/// Sends `mib` MiB from `write` to `read` and returns the seconds taken.
fn pump(mut read: impl Read + Send + 'static, mut write: impl Write, mib: usize) -> f64 {
    let receiving = thread::spawn(move || {
        let mut buf = vec![0; CHUNK];
        let mut total = 0;
        while total < mib << 20 {
            match read.read(&mut buf).expect("read") {
                0 => panic!("early end"),
                n => total += n,
            }
        }
    });
    let chunk = vec![0x5a; CHUNK];
    let started = Instant::now();
    for _ in 0..(mib << 20) / CHUNK {
        write.write_all(&chunk).expect("write");
    }
    write.flush().expect("flush");
    receiving.join().expect("receiver");
    started.elapsed().as_secs_f64()
}

fn tcp(mib: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = thread::spawn(move || listener.accept().unwrap().0);
    let client = TcpStream::connect(addr).unwrap();
    let server = accepting.join().unwrap();
    pump(server, client, mib)
}

fn tls(mib: usize) -> f64 {
    let psk = Psk::from_bytes(&[7; 32]).unwrap();
    let listener = Listener::bind("127.0.0.1:0", &psk, Options::default()).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepting = thread::spawn(move || listener.accept().unwrap().0);
    let client = connect(&addr, &psk, &Options::default()).unwrap();
    let server = accepting.join().unwrap();
    pump(server.reader(), client.writer(), mib)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; take the numbers that follow, if any.
    let args: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let mib = args.first().copied().unwrap_or(512);
    let runs = args.get(1).copied().unwrap_or(5);
    let (mut plain, mut secure) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.push(tcp(mib));
        secure.push(tls(mib));
    }
    let (plain, secure) = (median(plain), median(secure));
    let rate = |secs: f64| mib as f64 / secs;
    println!("{mib} MiB one way over loopback, median of {runs}:");
    println!("  plain TCP    {plain:.3} s  {:.0} MiB/s", rate(plain));
    println!("  wasmover-net {secure:.3} s  {:.0} MiB/s", rate(secure));
    println!("  TLS / TCP    {:.2}× the time", secure / plain);
}
