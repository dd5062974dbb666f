"""Airflow DAG of the drill spec drills/orders-k8s.yaml.

Written by `drillkit dags sync`: edit the YAML, not this file.
"""

from drillkit.operators.dag_factory import dag_from_spec_file

dag = dag_from_spec_file("drills/orders-k8s.yaml", loader=__file__)
