# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime"]; if address :mime :all "from" "juergen@example.de" { discard; }
