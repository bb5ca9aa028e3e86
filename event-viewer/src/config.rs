//! One typed configuration, read from the command line and the environment.

use std::net::SocketAddr;

use async_nats::ServerAddr;
use clap::Parser;

/// The viewer only observes: it needs NATS (read), the services' base URLs (for `/metrics` and
/// the proxied create-product and place-order forms) and an address to serve the page on.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "event-viewer",
    version,
    about = "A live page of both services' events, sagas and lag"
)]
pub struct Config {
    /// One NATS URL, or a cluster's nodes separated by commas
    /// (`nats://n1:4222,nats://n2:4222,nats://n3:4222`): the client reconnects to any of them,
    /// and the cluster panel probes each.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ',',
        value_parser = parse_server_addr
    )]
    pub nats_url: Vec<ServerAddr>,
    /// NATS user; unset: connect without credentials.
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Prefix of the services' JetStream streams and subjects.
    #[arg(long, env = "EVENTS_NAMESPACE", default_value = "shop")]
    pub events_namespace: String,
    /// order-service's base URL.
    #[arg(long, env = "ORDERS_URL", default_value = "http://localhost:8081")]
    pub orders_url: String,
    /// product-service's base URL.
    #[arg(long, env = "PRODUCTS_URL", default_value = "http://localhost:8082")]
    pub products_url: String,
    /// Where the page is served; port 0 picks a free port.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

impl Config {
    /// NATS credentials when both are set and the user is not empty.
    pub fn nats_credentials(&self) -> Option<(String, String)> {
        match (&self.nats_user, &self.nats_password) {
            (Some(user), password) if !user.is_empty() => {
                Some((user.clone(), password.clone().unwrap_or_default()))
            }
            _ => None,
        }
    }

    /// `NATS_URL` as given, for messages.
    pub fn nats_urls(&self) -> String {
        let urls: Vec<_> = self.nats_url.iter().map(|a| a.as_url_str()).collect();
        urls.join(",")
    }

    /// The two services, with the NATS names their relays publish under.
    pub fn services(&self) -> [ServiceNames; 2] {
        let ns = &self.events_namespace;
        [
            ServiceNames {
                service: "orders",
                base_url: self.orders_url.trim_end_matches('/').to_owned(),
                stream: format!("{ns}_order_events"),
                subject_prefix: format!("{ns}.order.events"),
                durable_on_other: "order-service",
            },
            ServiceNames {
                service: "products",
                base_url: self.products_url.trim_end_matches('/').to_owned(),
                stream: format!("{ns}_product_events"),
                subject_prefix: format!("{ns}.product.events"),
                durable_on_other: "product-service",
            },
        ]
    }

    /// Where the services publish the messages they dead-letter.
    pub fn dead_letter_subjects(&self) -> String {
        format!("{}.deadletter.>", self.events_namespace)
    }
}

/// One URL of `NATS_URL`; blanks around the commas are allowed.
fn parse_server_addr(url: &str) -> Result<ServerAddr, String> {
    url.trim()
        .parse()
        .map_err(|e| format!("NATS URL {url:?} is not valid: {e}"))
}

/// One service as the viewer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    /// `orders` or `products`: the name the page uses.
    pub service: &'static str,
    pub base_url: String,
    /// The JetStream stream its relay publishes to, and the subjects' prefix.
    pub stream: String,
    pub subject_prefix: String,
    /// The name of its durable consumer on the other service's stream.
    pub durable_on_other: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace_as_the_services_derive_them() {
        let config =
            Config::try_parse_from(["event-viewer", "--events-namespace", "t1"]).expect("parses");
        let [orders, products] = config.services();
        assert_eq!(orders.stream, "t1_order_events");
        assert_eq!(orders.subject_prefix, "t1.order.events");
        assert_eq!(products.stream, "t1_product_events");
        assert_eq!(products.subject_prefix, "t1.product.events");
        assert_eq!(config.dead_letter_subjects(), "t1.deadletter.>");
        assert_eq!(config.http_addr.port(), 8080);
    }

    #[test]
    fn nats_url_takes_a_comma_separated_list_of_nodes() {
        // The declared default (parsing without the flag would read NATS_URL, which the test
        // suite's second pass sets).
        let command = <Config as clap::CommandFactory>::command();
        let nats_url = command
            .get_arguments()
            .find(|a| a.get_id() == "nats_url")
            .expect("the --nats-url argument");
        let defaults: Vec<_> = nats_url
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy())
            .collect();
        assert_eq!(defaults, ["nats://127.0.0.1:4222"]);
        let config = Config::try_parse_from([
            "event-viewer",
            "--nats-url",
            "nats://n1:4222, nats://n2:4223,n3:4224",
        ])
        .expect("parses");
        let nodes: Vec<_> = config
            .nats_url
            .iter()
            .map(|a| format!("{}:{}", a.host(), a.port()))
            .collect();
        assert_eq!(nodes, ["n1:4222", "n2:4223", "n3:4224"]);
        assert!(Config::try_parse_from(["event-viewer", "--nats-url", "nats://a:b:c"]).is_err());
    }

    #[test]
    fn credentials_need_a_user() {
        let config = Config::try_parse_from(["event-viewer"]).expect("parses");
        assert_eq!(config.nats_credentials(), None);
        let config = Config::try_parse_from([
            "event-viewer",
            "--nats-user",
            "viewer",
            "--nats-password",
            "pw",
        ])
        .expect("parses");
        assert_eq!(
            config.nats_credentials(),
            Some(("viewer".to_owned(), "pw".to_owned()))
        );
    }
}
