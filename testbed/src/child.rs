//! Driving a binary under test the way the kubelet does: start it, wait for its port, SIGTERM it.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("the loopback interface has a free port")
        .port()
}

/// Waits until `child` accepts TCP connections on `port`; panics if it exits first or times out.
pub fn wait_for_port(child: &mut Child, port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("process exited with {status} before listening on {port}");
        }
        assert!(
            Instant::now() < deadline,
            "process did not listen on {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM and waits for the exit; panics if the process ignores it for `timeout`.
pub fn terminate(child: &mut Child, timeout: Duration) -> ExitStatus {
    use nix::sys::signal::{Signal, kill};
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process ignored SIGTERM for {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over a fresh connection to `127.0.0.1:port`; returns status and body.
/// Enough for probing a binary under test without pulling an HTTP client into the test bed.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_with_headers(port, method, path, body, &[])
}

/// [`http`] with extra request headers, such as `authorization`.
pub fn http_with_headers(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\
         content-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Waits until `GET /readyz` on `port` answers 200; panics after `timeout`.
pub fn wait_until_ready(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !http(port, "GET", "/readyz", None).is_ok_and(|(status, _)| status == 200) {
        assert!(
            Instant::now() < deadline,
            "not ready on {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
