# message: nested.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "fileinto"]; foreverypart { if header :mime :anychild :subtype "content-type" "html" { fileinto "has-html-below"; } }
