# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "extracttext", "fileinto"]; foreverypart { if header :mime :subtype "content-type" "plain" { extracttext :upper :first 10 "t"; fileinto "u-${t}"; } }
