"""``features``: episodes -> frozen DINO patch tokens in the content-addressed feature cache + its manifest."""
