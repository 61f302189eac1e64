# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime", "foreverypart", "variables", "extracttext", "fileinto"]; foreverypart { if header :mime :subtype "content-type" "plain" { extracttext :first 5 "t"; fileinto "${t}"; } }
