# message: list.eml
# from: alice@example.org
# to: bob+work@example.net
require "fileinto"; if header :matches "list-id" "*<*.lists.example.com>" { fileinto "lists"; }
