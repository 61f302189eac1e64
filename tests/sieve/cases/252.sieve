# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime"]; if header :mime :subtype "content-type" "plain" { discard; }
