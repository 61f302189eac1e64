# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime", "foreverypart"]; foreverypart { if header :mime :type "content-type" "application" { discard; } }
