"""The routes of Airflow's REST API that Sluice serves, one module per resource."""
