# message: list.eml
# from: alice@example.org
# to: bob+work@example.net
require "fileinto"; if exists "list-id" { fileinto "Lists"; } else { keep; }
