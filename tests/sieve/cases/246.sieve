# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime"]; if header :mime :anychild :contenttype "content-type" "application/pdf" { discard; }
