# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "extracttext", "fileinto"]; foreverypart { if header :mime :subtype "content-type" "plain" { extracttext :quotewildcard :first 8 "t"; if string :matches "Hallo Bob" "${t}*" { fileinto "quoted"; } } }
