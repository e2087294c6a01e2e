"""Stage logic as plain functions (what the Kedro nodes call): above the library packages, below pipelines/."""
