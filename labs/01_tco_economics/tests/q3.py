OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert biggest_lever is not ... and biggest_swing is not ..., 'not done yet: set biggest_lever and biggest_swing'\n"
                                               ">>> assert biggest_lever in {'usd_per_gpu_hour', 'engineer_fte', 'bandwidth_efficiency'}, 'one of the three input names'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
