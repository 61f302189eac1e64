# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime"]; if header :mime :type :subtype "content-type" "text" { discard; }
