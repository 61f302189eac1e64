# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "variables", "extracttext", "fileinto"]; foreverypart { extracttext :first 0 "t"; fileinto "z${t}"; }
