//! Free loopback ports for test servers.
//!
//! A port is found by binding `127.0.0.1:0` and reading what the kernel chose. The listener is
//! closed before the port is returned (the process that will use it binds it itself), so the ports
//! handed out in this process are remembered and never handed out twice.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// `N` distinct free loopback ports.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut taken = handed_out()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // keep every listener open until all N are chosen, so the kernel cannot repeat one
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    let mut filled = 0;
    let mut attempts = 0;
    while filled < N {
        attempts += 1;
        assert!(attempts < 1000, "no free loopback port after 1000 attempts");
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        if taken.insert(port) {
            ports[filled] = port;
            filled += 1;
        }
        listeners.push(listener);
    }
    ports
}

/// One free loopback port.
pub fn free_port() -> u16 {
    let [port] = free_ports::<1>();
    port
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
