VALUE = "sibling-import-works"
