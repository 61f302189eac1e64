# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "extracttext", "fileinto"]; foreverypart { if header :mime :subtype "content-type" "pdf" { extracttext :first 8 "t"; fileinto "p-${t}"; } }
