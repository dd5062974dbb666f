"""drillkit: automated restore drills for Apache Airflow 3. The core never imports airflow."""

__version__ = "0.1.0"
