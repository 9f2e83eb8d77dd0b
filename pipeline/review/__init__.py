"""Review aids: contact sheets for reviewers and image comparison for `shotline reproduce`."""
