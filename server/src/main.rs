//! `zonecached`: one zonecache node, started like memcached.

use clap::Parser;
use zonecache_server::config::Config;

fn main() -> std::process::ExitCode {
    zonecache_server::node::run_node(Config::parse())
}
