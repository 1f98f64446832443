"""Real and fake POP3 peers (servers, clients) the end-to-end tests run against."""
