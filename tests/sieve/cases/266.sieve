# message: nested.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "fileinto"]; foreverypart { if address :mime "from" "carol@example.com" { fileinto "carol-inside"; } }
