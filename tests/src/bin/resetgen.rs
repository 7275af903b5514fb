//! Provokes TCP resets of a known kind and reports what each socket saw.
//!
//! ```text
//! resetgen server --listen ADDR:PORT --mode linger|data-after-close --count N
//! resetgen client --bind IP --connect ADDR:PORT --kind closed-port|linger|data-after-close --count N
//! ```
//! Run each end inside a network namespace (`ip netns exec NS resetgen ...`),
//! both in one namespace for loopback, or client and server in two namespaces
//! joined by a veth pair. A server prints `{"listening":ADDR}` once it listens,
//! serves N connections one after another, then prints its report; a client
//! prints its report. Reports are one JSON line (`observer_e2e::resetgen::Report`).
//! Every wait is bounded, so the generator always exits; any unexpected step
//! fails it with exit code 1.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use observer_e2e::resetgen::{Kind, Listening, Report, SocketReport};
use socket2::{Domain, Socket, Type};

/// Bound on any single network wait.
const STEP: Duration = Duration::from_secs(5);
/// Bound on a server's whole run.
const SERVER_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after EOF before writing, so the server's FIN has been acknowledged
/// and its socket is an orphan (FIN_WAIT2 / time-wait) when the data arrives.
const AFTER_EOF: Duration = Duration::from_millis(20);

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("resetgen: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let (role, flags) = args.split_first().context("usage: resetgen server|client --flag value ...")?;
    let flag = |name: &str| -> Result<&str> {
        let i = flags.iter().position(|f| f == name).with_context(|| format!("{name} is required"))?;
        flags.get(i + 1).map(String::as_str).with_context(|| format!("{name} needs a value"))
    };
    let count: usize = flag("--count")?.parse().context("--count")?;
    let kind_flag = if role == "server" { "--mode" } else { "--kind" };
    let kind: Kind = flag(kind_flag)?.parse().map_err(anyhow::Error::msg)?;
    let sockets = match role.as_str() {
        "server" => {
            ensure!(kind != Kind::ClosedPort, "a closed port needs no server");
            serve(flag("--listen")?.parse().context("--listen")?, kind, count)?
        }
        "client" => {
            let bind: IpAddr = flag("--bind")?.parse().context("--bind")?;
            let target: SocketAddr = flag("--connect")?.parse().context("--connect")?;
            (0..count)
                .map(|i| client(kind, bind, target).with_context(|| format!("connection {i}")))
                .collect::<Result<_>>()?
        }
        other => bail!("unknown role {other:?}: server or client"),
    };
    print_line(&Report { role: role.clone(), kind, pid: std::process::id(), cgroup: own_cgroup()?, sockets })
}

fn serve(listen: SocketAddr, kind: Kind, count: usize) -> Result<Vec<SocketReport>> {
    let listener = Socket::new(Domain::for_address(listen), Type::STREAM, None)?;
    listener.set_reuse_address(true)?;
    listener.bind(&listen.into()).with_context(|| format!("bind {listen}"))?;
    listener.listen(128)?;
    print_line(&Listening { listening: listen })?;

    let deadline = Instant::now() + SERVER_LIFETIME;
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(wait_for(&listener, libc::POLLIN, left)?, "accepted {i} of {count} connections in {SERVER_LIFETIME:?}");
        let (mut conn, _) = listener.accept()?;
        let (local, remote) = addrs(&conn)?;
        let errno = match kind {
            Kind::Linger => {
                // One byte tells the client it was accepted; then wait for its RST.
                conn.write_all(b"x")?;
                conn.set_read_timeout(Some(STEP))?;
                Some(match conn.read(&mut [0; 16]) {
                    Ok(0) => "EOF".to_string(),
                    Ok(_) => "DATA".to_string(),
                    Err(e) => errno_name(&e),
                })
            }
            // Close at once: a FIN, leaving an orphan that resets later data.
            _ => None,
        };
        drop(conn);
        sockets.push(SocketReport { local, remote, errno });
    }
    Ok(sockets)
}

fn client(kind: Kind, bind: IpAddr, target: SocketAddr) -> Result<SocketReport> {
    let sock = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    // Bind first: after a refused connect the kernel clears the local address,
    // so getsockname() must be asked before connecting.
    sock.bind(&SocketAddr::new(bind, 0).into()).with_context(|| format!("bind {bind}"))?;
    let local = sock.local_addr()?.as_socket().context("local address")?;
    let connected = sock.connect_timeout(&target.into(), STEP);
    if kind == Kind::ClosedPort {
        let errno = match connected {
            Ok(()) => bail!("connected to {target}, which should have no listener"),
            Err(e) => errno_name(&e),
        };
        return Ok(SocketReport { local, remote: target, errno: Some(errno) });
    }
    connected.with_context(|| format!("connect {target}"))?;
    let (local, remote) = addrs(&sock)?;
    sock.set_read_timeout(Some(STEP))?;
    let mut buf = [0u8; 16];
    let errno = match kind {
        Kind::Linger => {
            ensure!(read(&sock, &mut buf)? == 1, "expected the server's byte");
            sock.set_linger(Some(Duration::ZERO))?;
            drop(sock); // close() with a zero linger sends the RST
            None
        }
        _ => {
            ensure!(read(&sock, &mut buf)? == 0, "expected EOF from the server");
            std::thread::sleep(AFTER_EOF);
            // Exactly one segment: a second one could reach a socket the
            // first RST already removed and provoke another RST.
            let sent = sock.send_with_flags(b"late", libc::MSG_NOSIGNAL)?;
            ensure!(sent == 4, "short send");
            // The RST closes the socket: POLLHUP/POLLERR, error in SO_ERROR.
            ensure!(wait_for(&sock, 0, STEP)?, "no RST within {STEP:?}");
            Some(match sock.take_error()? {
                Some(e) => errno_name(&e),
                None => "none".to_string(),
            })
        }
    };
    Ok(SocketReport { local, remote, errno })
}

fn read(sock: &Socket, buf: &mut [u8]) -> Result<usize> {
    let mut s: &Socket = sock;
    Ok(s.read(buf)?)
}

fn addrs(sock: &Socket) -> Result<(SocketAddr, SocketAddr)> {
    let local = sock.local_addr()?.as_socket().context("local address")?;
    let remote = sock.peer_addr()?.as_socket().context("peer address")?;
    Ok((local, remote))
}

/// poll()s `sock` for `events` (POLLERR and POLLHUP always count); false on timeout.
fn wait_for(sock: &Socket, events: libc::c_short, limit: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events, revents: 0 };
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    ensure!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    Ok(n == 1)
}

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{:?}", nix::errno::Errno::from_raw(n)),
        None if e.kind() == ErrorKind::TimedOut => "ETIMEDOUT".to_string(),
        None => format!("{:?}", e.kind()),
    }
}

fn own_cgroup() -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    observer_e2e::cgroup::v2_path(&text).context("no cgroup v2 line in /proc/self/cgroup")
}

fn print_line<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
