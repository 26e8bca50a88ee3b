//! The NATS servers a role is given: one URL, or a comma-separated list of a cluster's servers
//! (`nats://nats-0:4222,nats://nats-1:4222`), as the NATS CLI takes them. The client tries
//! them in turn and learns the rest of the cluster from the servers themselves, so a list
//! only matters for the first connection, while one of the named servers is down.

use std::fmt;
use std::str::FromStr;

use async_nats::{ServerAddr, ToServerAddrs};

/// One or more NATS server URLs, each checked when the setting is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsServers {
    text: String,
    addresses: Vec<ServerAddr>,
}

/// A NATS URL setting that names no server, or one that is not a NATS URL.
#[derive(Debug, thiserror::Error)]
pub enum BadNatsUrl {
    #[error("no NATS server URL given")]
    Empty,
    #[error("{url:?} is not a NATS server URL")]
    Invalid {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

impl FromStr for NatsServers {
    type Err = BadNatsUrl;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let addresses = text
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse().map_err(|source| BadNatsUrl::Invalid {
                    url: url.to_owned(),
                    source,
                })
            })
            .collect::<Result<Vec<ServerAddr>, _>>()?;
        if addresses.is_empty() {
            return Err(BadNatsUrl::Empty);
        }
        Ok(NatsServers {
            text: text.trim().to_owned(),
            addresses,
        })
    }
}

impl fmt::Display for NatsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl ToServerAddrs for NatsServers {
    type Iter = std::vec::IntoIter<ServerAddr>;

    fn to_server_addrs(&self) -> std::io::Result<Self::Iter> {
        Ok(self.addresses.clone().into_iter())
    }
}

/// A client of `servers`, retrying its first connection until one answers, so a role starts
/// while NATS is still coming up (not ready meanwhile) instead of crashing.
pub async fn connect(servers: &NatsServers) -> Result<async_nats::Client, ConnectError> {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .map_err(|source| ConnectError {
            servers: servers.clone(),
            source,
        })
}

/// Why a client of the NATS servers could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {servers}")]
pub struct ConnectError {
    servers: NatsServers,
    #[source]
    source: async_nats::ConnectError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_each_server_in_turn() {
        let servers: NatsServers = "nats://a:4222, nats://b:4223,c".parse().unwrap();
        let names: Vec<String> = servers
            .to_server_addrs()
            .unwrap()
            .map(|address| format!("{}:{}", address.host(), address.port()))
            .collect();
        assert_eq!(names, ["a:4222", "b:4223", "c:4222"]);
        assert_eq!(servers.to_string(), "nats://a:4222, nats://b:4223,c");
    }

    #[test]
    fn a_bad_url_is_named() {
        let error = "nats://a:4222,http://b:80"
            .parse::<NatsServers>()
            .unwrap_err();
        assert!(error.to_string().contains("\"http://b:80\""), "{error}");
        assert!(matches!(",".parse::<NatsServers>(), Err(BadNatsUrl::Empty)));
    }
}
